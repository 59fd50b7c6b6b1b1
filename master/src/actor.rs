//! The one owner of cluster state: a task that takes commands, applies them to [`State`],
//! schedules, publishes an immutable snapshot for readers, then delivers orders and replies.
//!
//! Everything queued when a turn starts is applied in that turn, so a burst of submissions
//! costs one scheduling pass, one write to the store (fsync'd) and one snapshot. Nobody is
//! answered before what the turn changed is on disk.
//!
//! The actor has a thread and runtime of its own and writes each turn on that thread. It waits
//! for the write before its next turn anyway; handing the write to a blocking thread and being
//! woken again cost two thread wakeups on the path of every submission.

use std::sync::Arc;

use hearth_common::{
    Shutdown, ids,
    proto::{MasterMessage, Registered, master_message::Msg},
};
use tokio::{
    sync::{mpsc, oneshot, watch},
    time::{Instant, MissedTickBehavior},
};

use crate::{
    command::Command,
    config::MasterConfig,
    driver_tokens::DriverTokens,
    error::{Error, Result},
    ha::{
        Leadership,
        replication::{Joining, Joins, Publish, Replicas, ReplicationStatus},
    },
    kept_logs::KeptLogs,
    links::Links,
    schedule::QueueTree,
    state::{Effect, Limits, State, stored::Loaded},
    store::Store,
    telemetry::Telemetry,
    tenants::Tenants,
    tunnels::Tunnels,
};

/// Commands queued between handlers and the actor; senders wait when it is full.
const COMMAND_QUEUE: usize = 4096;
/// Most commands applied in one turn.
const MAX_TURN: usize = 1024;

/// What handlers hold: a way to send commands, the latest snapshot, and the worker links.
#[derive(Debug, Clone)]
pub struct MasterHandle {
    commands: mpsc::Sender<Command>,
    snapshot: watch::Receiver<Arc<State>>,
    pub links: Links,
    pub config: Arc<MasterConfig>,
    pub shutdown: Shutdown,
    pub telemetry: Arc<Telemetry>,
    /// Mints and checks the drivers' own tokens.
    pub tokens: Arc<DriverTokens>,
    /// The logs workers shipped, served once a worker is gone.
    pub kept_logs: KeptLogs,
    /// Driver UI connections waiting for their worker to open the tunnel.
    pub tunnels: Tunnels,
    /// Why the state file cannot be written now, if it cannot.
    pub store_trouble: StoreTrouble,
    /// What the autoscaler did and wants, for the overview and `/metrics`.
    pub autoscale: Arc<crate::scaling_status::Status>,
    /// The state file, for completed drivers no longer in memory.
    pub store: Arc<Store>,
    /// This process's term and whether it may still act.
    pub leadership: Arc<Leadership>,
    /// Where standbys join (under a Lease only).
    pub joins: Option<Joins>,
    /// The standby as the actor last saw it.
    pub replication: Arc<std::sync::Mutex<ReplicationStatus>>,
}

/// Why the last write of the state file failed, until one succeeds again: while it is set the
/// master answers reads but every change is refused (UNAVAILABLE), and it is not ready.
#[derive(Debug, Clone, Default)]
pub struct StoreTrouble(Arc<std::sync::Mutex<Option<String>>>);

impl StoreTrouble {
    pub fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, why: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }
}

/// How often a master whose state file cannot be written tries it again while idle.
const STORE_RETRY: std::time::Duration = std::time::Duration::from_secs(2);

impl MasterHandle {
    /// The state as of the last completed turn.
    pub fn snapshot(&self) -> Arc<State> {
        self.snapshot.borrow().clone()
    }

    /// A receiver that wakes after each turn that changed something.
    pub fn subscribe(&self) -> watch::Receiver<Arc<State>> {
        self.snapshot.clone()
    }

    pub async fn send(&self, command: Command) -> Result<()> {
        self.commands
            .send(command)
            .await
            .map_err(|_| Error::ShuttingDown)
    }

    /// A driver by id: from the snapshot, or for one no longer in memory, from the history
    /// kept in the state file, read on a blocking thread (the runtime's threads carry every
    /// worker's heartbeats).
    pub async fn find_driver(&self, id: &str) -> Result<Arc<crate::state::DriverInfo>> {
        let snapshot = self.snapshot();
        match snapshot.driver(id) {
            Ok(d) => Ok(d.clone()),
            Err(not_found) => {
                let (store, key) = (self.store.clone(), id.to_string());
                let read = tokio::task::spawn_blocking(move || store.history_driver(&key))
                    .await
                    .map_err(|e| Error::Internal(format!("reading the history: {e}")))?;
                match read? {
                    Some(d) => Ok(Arc::new(d)),
                    None => Err(not_found),
                }
            }
        }
    }

    /// Sends a command carrying `reply` and waits for the answer.
    pub async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        rx.await.map_err(|_| Error::ShuttingDown)?
    }
}

/// Starts the actor on the state `store` held (`loaded`, as read), on a thread of its own; it
/// runs until `shutdown` is cancelled. A turn whose write fails is undone (its callers told
/// UNAVAILABLE, its orders never sent) and the master goes on serving reads until the file can
/// be written again. The handle's task ends with the actor.
#[allow(clippy::too_many_arguments)] // each a part the actor owns or shares, named at the one caller
pub fn spawn(
    config: Arc<MasterConfig>,
    master_url: String,
    (store, loaded): (Store, Loaded),
    queues: (Arc<QueueTree>, Arc<Tenants>),
    tokens: Arc<DriverTokens>,
    kept_logs: KeptLogs,
    leadership: Arc<Leadership>,
    shutdown: Shutdown,
) -> Result<(MasterHandle, tokio::task::JoinHandle<Result<()>>)> {
    let now_ms = ids::now_ms();
    let limits = Limits {
        retained_drivers: config.retained_drivers,
        retained_apps: config.retained_apps,
        max_waiting: config.max_waiting,
        spread_out: config.spread_out,
        reserve_after_ms: Some(config.reserve_after.as_millis() as u64),
        usage_half_life_ms: Some(config.usage_half_life.as_millis() as u64).filter(|h| *h > 0),
        lease_ms: config.worker_timeout.as_millis() as u64,
    };
    let mut state = State::recover(loaded, master_url, Instant::now(), now_ms, limits);
    state.set_queues(queues.0, queues.1);
    // What the file holds, as a state: the first turn writes only what differs from it.
    let persisted = state.clone();
    let mut settle = Vec::new();
    state.settle_orphans(now_ms, &mut settle);
    if state.recovering {
        tracing::info!(
            workers = state.workers.len(),
            drivers = state.drivers.len(),
            apps = state.apps.len(),
            timeout_ms = config.recovery_timeout.as_millis() as u64,
            "recovering: waiting for known workers to come back"
        );
    }
    let recovery_deadline = Instant::now() + config.recovery_timeout;
    let store = Arc::new(store);
    let (commands, rx) = mpsc::channel(COMMAND_QUEUE);
    let (snapshot_tx, snapshot) = watch::channel(Arc::new(state.clone()));
    let links = Links::default();
    let telemetry = Arc::new(Telemetry::new(config.samples_kept()));
    let (replicas, joins) = if leadership.elected_by_lease() {
        let (replicas, joins) = Replicas::new(leadership.epoch);
        (Some(replicas), Some(joins))
    } else {
        (None, None)
    };
    let replication = Arc::new(std::sync::Mutex::new(ReplicationStatus::default()));
    let handle = MasterHandle {
        commands,
        snapshot,
        links: links.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
        telemetry: telemetry.clone(),
        tokens: tokens.clone(),
        kept_logs,
        tunnels: Tunnels::default(),
        store_trouble: StoreTrouble::default(),
        autoscale: Arc::default(),
        store: store.clone(),
        leadership: leadership.clone(),
        joins,
        replication: replication.clone(),
    };
    if let Some(why) = store.read_only() {
        handle.store_trouble.set(Some(why.to_string()));
    }
    let actor = Actor {
        store_trouble: handle.store_trouble.clone(),
        store_retried: Instant::now(),
        state,
        persisted,
        store,
        recovery_deadline,
        rx,
        snapshot_tx,
        links,
        config,
        telemetry,
        tokens,
        leadership,
        replicas,
        replication,
        connected: ConnectedCount::default(),
    };
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("hearth-state".into())
        .spawn(move || {
            let _ = done_tx.send(actor.run_on_own_runtime(shutdown));
        })
        .map_err(|e| Error::Internal(format!("cannot start the state thread: {e}")))?;
    let task = tokio::spawn(async move {
        done_rx
            .await
            .unwrap_or_else(|_| Err(Error::Internal("the state thread panicked".into())))
    });
    Ok((handle, task))
}

struct Actor {
    state: State,
    /// The state as last written to the store.
    persisted: State,
    store: Arc<Store>,
    recovery_deadline: Instant,
    rx: mpsc::Receiver<Command>,
    snapshot_tx: watch::Sender<Arc<State>>,
    links: Links,
    config: Arc<MasterConfig>,
    telemetry: Arc<Telemetry>,
    tokens: Arc<DriverTokens>,
    /// Shared with the handlers: why the state file cannot be written now.
    store_trouble: StoreTrouble,
    /// When a write was last tried while the file could not be written.
    store_retried: Instant,
    leadership: Arc<Leadership>,
    /// The standby, under a Lease.
    replicas: Option<Replicas>,
    replication: Arc<std::sync::Mutex<ReplicationStatus>>,
    connected: ConnectedCount,
}

/// How many workers the state has connected, counted again only once its workers changed: the
/// tick asks every second, and at 10,000 workers a count walks all of them.
#[derive(Default)]
struct ConnectedCount(Option<(imbl::OrdMap<String, Arc<crate::state::WorkerInfo>>, usize)>);

impl ConnectedCount {
    fn of(&mut self, state: &State) -> usize {
        match &self.0 {
            Some((counted, n)) if counted.ptr_eq(&state.workers) => *n,
            _ => {
                let n = state.connected_workers();
                self.0 = Some((state.workers.clone(), n));
                n
            }
        }
    }
}

/// A reply held back until the turn's changes are durable and published. Given the store's
/// error instead when they could not be written.
type Reply = Box<dyn FnOnce(Option<&Error>) + Send>;

/// The next standby to join; never, without a Lease.
async fn next_join(replicas: &mut Option<Replicas>) -> Option<Joining> {
    match replicas {
        Some(r) => r.joined().await,
        None => std::future::pending().await,
    }
}

fn reply<T: Send + 'static>(tx: oneshot::Sender<Result<T>>, value: Result<T>) -> Reply {
    Box::new(move |failure| {
        let value = match failure {
            Some(e) => Err(Error::Unavailable(format!("not recorded: {e}"))),
            None => value,
        };
        // The asker may have given up (client went away); nothing to do then.
        let _ = tx.send(value);
    })
}

impl Actor {
    fn run_on_own_runtime(self, shutdown: Shutdown) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the state runtime: {e}")))?;
        let ran = runtime.block_on(self.run(shutdown));
        // A standby's snapshot read on a blocking thread is not waited for past this.
        runtime.shutdown_timeout(std::time::Duration::from_secs(5));
        ran
    }

    async fn run(mut self, shutdown: Shutdown) -> Result<()> {
        let period = (self.config.worker_timeout / 4).min(std::time::Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(MAX_TURN);
        loop {
            let mut effects = Vec::new();
            let mut replies: Vec<Reply> = Vec::new();
            // Commands before the tick: heartbeats already queued must count before expiry.
            let changed = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(joining) = next_join(&mut self.replicas) => {
                    // Between turns: the snapshot is exactly what was committed so far.
                    if let Some(replicas) = &mut self.replicas {
                        replicas.accept(joining, &self.store);
                    }
                    continue;
                }
                n = self.rx.recv_many(&mut batch, MAX_TURN) => {
                    if n == 0 {
                        break;
                    }
                    let mut heartbeats_only = true;
                    for command in batch.drain(..) {
                        heartbeats_only &= matches!(command, Command::Heartbeat { .. });
                        self.apply(command, &mut effects, &mut replies);
                    }
                    if heartbeats_only {
                        // They change nothing kept, shown or placed: no schedule, write or
                        // snapshot. What their workers reported before them was in an earlier
                        // turn, committed before this one began, so the answers go now.
                        for effect in effects {
                            self.deliver(effect);
                        }
                        continue;
                    }
                    true
                }
                // A burst larger than one turn places: the next turn goes on with it.
                _ = std::future::ready(()), if self.state.placement_pending() => true,
                _ = tick.tick() => {
                    self.links.set_heartbeat_interval(
                        self.config.heartbeat_interval_for(self.links.connected()),
                    );
                    let (now, timeout, links) =
                        (Instant::now(), self.config.worker_timeout, &self.links);
                    // Every stream heard in time, and every connected worker has one: nothing
                    // can have expired, and 10,000 workers are not looked up one by one.
                    let quiet = links.all_heard_within(now, timeout)
                        && links.connected() == self.connected.of(&self.state);
                    let expired = !quiet
                        && self.state.expire_workers_heard(
                            ids::now_ms(),
                            &mut effects,
                            timeout,
                            |w| links.give_up_if_silent(&w.id, w.conn_id, w.last_seen, now, timeout),
                        );
                    let now_ms = ids::now_ms();
                    let limited = self.state.enforce_time_limits(now_ms, &mut effects);
                    let now = Instant::now();
                    let lowered = self.state.lower_lease(now);
                    let released = self.state.fence_due(now) && self.state.release_fences(now);
                    self.state.decay_usage(now_ms);
                    if let Some(replicas) = &mut self.replicas {
                        replicas.promote(&self.leadership);
                        *self.replication.lock().unwrap_or_else(|p| p.into_inner()) = replicas.status();
                    }
                    // A state file that could not be written is tried again now and then.
                    let retry = self.store_trouble.get().is_some()
                        && self.store_retried.elapsed() >= STORE_RETRY;
                    expired
                        || limited
                        || lowered
                        || released
                        || retry
                        || self.state.recovering
                        || self.state.reservation_check_due(now_ms)
                        || self.state.preemption_due(now_ms)
                }
            };
            if !changed {
                continue;
            }
            if self.state.recovering
                && (self.state.all_workers_back() || Instant::now() >= self.recovery_deadline)
            {
                self.state.finish_recovery(ids::now_ms(), &mut effects);
            }
            let started = Instant::now();
            self.state.schedule(ids::now_ms(), &mut effects);
            self.state.preempt(ids::now_ms(), &mut effects);
            self.telemetry.schedule.observe(started.elapsed());
            self.state.prune();
            let failure = self.persist().await.err();
            if !self.leadership.acting() {
                // Past the term's deadline: whatever this turn decided is left to the next
                // leader, which recovers it from the file as after a restart.
                tracing::error!(
                    epoch = self.leadership.epoch,
                    "no longer the leader: stopping without answering or ordering"
                );
                let e = failure.unwrap_or_else(|| Error::Unavailable(
                    "this master no longer leads; try again (the client retries through the Service)".into(),
                ));
                for r in replies {
                    r(Some(&e));
                }
                self.links.clear();
                shutdown.cancel();
                break;
            }
            if let Some(e) = &failure {
                // Undone: the state is the file's again. Callers hear UNAVAILABLE; no order of
                // this turn goes out; workers reconnect and report again what the lost turn
                // had heard from them.
                tracing::error!(error = %e, "cannot write the state file; the turn is undone and changes are refused until it can be written");
                self.state = self.persisted.clone();
                self.state.await_reconnects(Instant::now());
                self.recovery_deadline = Instant::now() + self.config.recovery_timeout;
                self.snapshot_tx.send_replace(Arc::new(self.state.clone()));
                for r in replies {
                    r(Some(e));
                }
                self.links.clear();
                continue;
            }
            self.snapshot_tx.send_replace(Arc::new(self.state.clone()));
            // Answers before orders: the gRPC thread takes them in this order, and a worker
            // woken by its order can take the CPU before an answer queued behind it is written.
            for r in replies {
                r(None);
            }
            for effect in effects {
                self.deliver(effect);
            }
        }
        self.links.clear();
        tracing::info!("master state actor stopped");
        Ok(())
    }

    /// Writes what changed since the last write, in one transaction, on the actor's own thread
    /// (nothing else runs there). After a failed write the file is opened again and brought up
    /// to the whole state.
    async fn persist(&mut self) -> Result<()> {
        if self.store_trouble.get().is_some() {
            self.store_retried = Instant::now();
            if let Err(e) = self.store.resync(&self.state) {
                self.store_trouble.set(Some(e.to_string()));
                self.telemetry
                    .store_failures
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                return Err(e.into());
            }
            tracing::info!("the state file can be written again; changes are accepted");
            self.store_trouble.set(None);
            self.persisted = self.state.clone();
            // The file was rewritten whole, not as turns a standby was sent: it starts again
            // from a snapshot, and the Lease stops naming it before anything is acknowledged.
            let unsync = self.replicas.as_mut().is_some_and(|r| {
                r.forget(false);
                r.take_unsync()
            });
            return self.replicated(Publish { wait: None, unsync }).await;
        }
        let changes = crate::store::diff(&self.persisted, &self.state);
        if changes.is_empty() {
            // Nothing kept changed (heartbeats): compare with this state from now on.
            self.persisted = self.state.clone();
            return Ok(());
        }
        let records = changes.records();
        let started = Instant::now();
        let changes = Arc::new(changes);
        // Sent to the standby first: its write and this one's run at the same time.
        let publish = self
            .replicas
            .as_mut()
            .map(|r| r.publish(&changes, &self.leadership))
            .unwrap_or_default();
        if let Err(e) = self.store.save(&changes) {
            // The standby may have written the turn this file did not; nothing is acknowledged
            // now, and the Lease stops naming it before anything is.
            if let Some(r) = &mut self.replicas {
                r.forget(publish.unsync);
            }
            self.store_trouble.set(Some(e.to_string()));
            self.telemetry
                .store_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e.into());
        }
        self.telemetry.store_write.observe(started.elapsed());
        tracing::debug!(records, "state written");
        self.persisted = self.state.clone();
        self.replicated(publish).await
    }

    /// Waits until a committed turn may be acknowledged: the standby in sync has it, or the
    /// Lease no longer names the one that does not.
    async fn replicated(&mut self, publish: Publish) -> Result<()> {
        let mut unsync = publish.unsync;
        if let Some((seq, mut applied)) = publish.wait {
            let timeout = self
                .config
                .ha
                .as_ref()
                .map_or(crate::ha::DEFAULT_REPLICATION_TIMEOUT, |h| {
                    h.replication_timeout
                });
            let confirmed =
                tokio::time::timeout(timeout, applied.wait_for(|a| a.is_some_and(|a| a >= seq)))
                    .await
                    .is_ok_and(|r| r.is_ok());
            if !confirmed {
                if let Some(replicas) = &mut self.replicas {
                    replicas.drop_follower();
                }
                unsync = true;
            }
        }
        if unsync && !self.leadership.set_in_sync(None).await {
            // The Lease still names a standby without this turn: nobody may be told it is
            // done. Leading stops; this turn is in the file, and the next leader has it.
            self.leadership.stop();
            return Err(Error::Unavailable(
                "the standby fell behind and the Lease could not be updated".into(),
            ));
        }
        if let Some(replicas) = &self.replicas {
            *self.replication.lock().unwrap_or_else(|p| p.into_inner()) = replicas.status();
        }
        Ok(())
    }

    fn apply(&mut self, command: Command, effects: &mut Vec<Effect>, replies: &mut Vec<Reply>) {
        let now_ms = ids::now_ms();
        match command {
            Command::Register {
                register,
                peer_host,
                link,
                reply: tx,
            } => {
                let host = if register.host.is_empty() {
                    peer_host
                } else {
                    register.host.clone()
                };
                let worker_id = register.worker_id.clone();
                let (cores, memory_mb) = (register.cores, register.memory_mb);
                // Registered goes first on the stream, ahead of any order of this turn.
                let interval = self
                    .config
                    .heartbeat_interval_for(self.links.connected() + 1)
                    .as_millis() as u64;
                link.heard.told(interval);
                let _ = link.send(MasterMessage {
                    msg: Some(Msg::Registered(Registered {
                        master_url: self.state.master_url.clone(),
                        heartbeat_interval_ms: interval,
                        host: host.clone(),
                        lease_ms: self.config.worker_timeout.as_millis() as u64,
                        epoch: self.leadership.epoch,
                    })),
                    epoch: 0,
                });
                let conn_id = link.conn_id;
                self.links.install(link);
                self.state.register_worker(
                    register,
                    host.clone(),
                    conn_id,
                    Instant::now(),
                    now_ms,
                    effects,
                );
                tracing::info!(worker_id, host, cores, memory_mb, "worker registered");
                replies.push(reply(tx, Ok(())));
            }
            Command::Drain {
                worker_id,
                drain,
                reply: tx,
            } => {
                let done = self.state.drain_worker(&worker_id, drain);
                replies.push(reply(tx, Ok(done)));
            }
            Command::Heartbeat {
                worker_id,
                conn_id,
                seq,
            } => {
                // Recorded on the stream, as the heartbeats answered beside the actor are: the
                // worker's record (shared with the published snapshot) is not copied for it.
                // Sent with this turn's effects, so after its commit: the worker may then
                // forget what it sent before, and its lease runs from when it sent this.
                let current = self
                    .state
                    .workers
                    .get(&worker_id)
                    .is_some_and(|w| w.conn_id == conn_id && w.connected);
                if current
                    && let Some(link) = self.links.get(&worker_id)
                    && link.conn_id == conn_id
                    && link.heard.beat(Instant::now(), now_ms)
                    && seq > 0
                {
                    let message = link.heard.ack(seq, self.links.heartbeat_interval_ms());
                    effects.push(crate::state::Effect::Send { worker_id, message });
                }
            }
            Command::DriverStatus {
                worker_id,
                conn_id,
                status,
            } => {
                if self.on_current_stream(&worker_id, conn_id) {
                    self.state
                        .driver_status(&worker_id, status, now_ms, effects);
                }
            }
            Command::ExecutorStatus {
                worker_id,
                conn_id,
                status,
            } => {
                if self.on_current_stream(&worker_id, conn_id) {
                    self.state
                        .executor_status(&worker_id, status, now_ms, effects);
                }
            }
            Command::Decommission {
                worker_id,
                conn_id,
                reason,
            } => {
                self.state.decommission_worker(&worker_id, conn_id, &reason);
            }
            Command::Disconnected {
                worker_id,
                conn_id,
                reason,
            } => {
                // Heartbeats on the stream were answered outside the state: what its drivers'
                // fences count from is when the worker was last heard there.
                if let Some((at, at_ms)) = self.links.remove(&worker_id, conn_id) {
                    self.state.heartbeat(&worker_id, conn_id, at, at_ms);
                }
                self.state
                    .worker_lost(&worker_id, conn_id, &reason, now_ms, effects);
            }
            Command::Submit {
                spec,
                application,
                submission_id,
                owner,
                reply: tx,
            } => {
                let result =
                    self.state
                        .submit_owned(spec, application, submission_id, owner, now_ms);
                if let Ok(id) = &result {
                    tracing::info!(driver_id = %id, "driver submitted");
                }
                replies.push(reply(tx, result));
            }
            Command::Kill {
                driver_id,
                reply: tx,
            } => {
                let result = self.state.kill_driver(&driver_id, now_ms, effects);
                if result.is_ok() {
                    tracing::info!(driver_id, "kill requested");
                }
                replies.push(reply(tx, result));
            }
            Command::RegisterApp {
                spec,
                driver,
                driver_host,
                owner,
                reply: tx,
            } => {
                let result = self.state.register_app_owned(
                    spec,
                    driver.as_ref().map(|(id, a)| (id.as_str(), *a)),
                    &driver_host,
                    owner,
                    now_ms,
                );
                replies.push(reply(tx, result));
            }
            Command::RequestExecutors {
                app_id,
                count,
                reply: tx,
            } => {
                replies.push(reply(tx, self.state.request_executors(&app_id, count)));
            }
            Command::KillExecutors {
                app_id,
                executor_ids,
                reply: tx,
            } => {
                let result = self
                    .state
                    .kill_executors(&app_id, &executor_ids, now_ms, effects);
                replies.push(reply(tx, result));
            }
            Command::UnregisterApp { app_id, reply: tx } => {
                let result = self.state.unregister_app(&app_id, now_ms, effects);
                replies.push(reply(tx, result));
            }
            Command::KillApp { app_id, reply: tx } => {
                let result = self.state.kill_app(&app_id, now_ms, effects);
                if result.is_ok() {
                    tracing::info!(app_id, "application kill requested");
                }
                replies.push(reply(tx, result));
            }
            Command::SetQueues(Ok((tree, tenants))) => {
                tracing::info!(queues = %tree.names(), tenants = tenants.all().len(), "queues file applied");
                self.state.set_queues(tree, tenants);
                self.state.queues_refused = None;
            }
            Command::SetQueues(Err(error)) => {
                tracing::error!(error, "queues file refused; the queues in force stay");
                self.state.queues_refused = Some(error);
                self.state.queue_files_refused += 1;
            }
        }
    }

    /// Whether a report came on the worker's current stream (not an older, replaced one).
    fn on_current_stream(&self, worker_id: &str, conn_id: u64) -> bool {
        self.state
            .workers
            .get(worker_id)
            .is_some_and(|w| w.conn_id == conn_id)
    }

    fn deliver(&self, effect: Effect) {
        match effect {
            Effect::Send {
                worker_id,
                mut message,
            } => {
                // The driver gets a token of its own, not the cluster secret; minted here so
                // the state stays free of keys.
                if let Some(Msg::LaunchDriver(launch)) = &mut message.msg {
                    launch.token = self.tokens.mint(&launch.driver_id, launch.attempt);
                    if launch.spec.as_ref().is_some_and(|s| s.ui_port > 0) {
                        launch.ui_base = format!(
                            "{}/drivers/{}/ui",
                            self.config.ui.base_path, launch.driver_id
                        );
                    }
                }
                let answered = match &message.msg {
                    Some(Msg::HeartbeatAck(ack)) => Some(ack.seq),
                    _ => None,
                };
                let link = self.links.get(&worker_id);
                if let (Some(seq), Some(link)) = (answered, &link) {
                    link.heard.answered_after_commit(seq);
                }
                if !link.is_some_and(|l| l.send(message)) {
                    // The stream is gone; its Disconnected command is on its way and will mark
                    // the worker dead, which relaunches or fails what was sent here.
                    tracing::warn!(worker_id, "order not delivered: worker not connected");
                }
            }
            Effect::Disconnect { worker_id, conn_id } => {
                self.links.remove(&worker_id, conn_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use hearth_common::proto::Register;

    use super::*;

    #[test]
    fn the_connected_count_follows_the_workers_and_is_kept_while_they_stay_the_same() {
        let mut state = State::new("http://m".into(), 0, Limits::retaining(10));
        let mut effects = Vec::new();
        let mut count = ConnectedCount::default();
        assert_eq!(count.of(&state), 0);
        for (conn, id) in (1..).zip(["a", "b"]) {
            let register = Register {
                worker_id: id.into(),
                cores: 1,
                memory_mb: 64,
                ..Default::default()
            };
            state.register_worker(register, "h".into(), conn, Instant::now(), 0, &mut effects);
        }
        assert_eq!(count.of(&state), 2);
        let before = state.clone();
        assert_eq!(count.of(&before), 2, "a copy holds the same workers");
        assert!(state.worker_lost("a", 1, "gone", 0, &mut effects));
        assert_eq!(count.of(&state), 1, "counted again once a worker changed");
        assert_eq!(count.of(&before), 2);
    }
}
