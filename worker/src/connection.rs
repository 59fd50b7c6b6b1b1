//! The worker's one stream to the master: register, heartbeat, report; take orders. Reconnects
//! forever with jittered exponential back-off, always to the configured master URL.

use std::{
    collections::VecDeque,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hearth_common::{
    Shutdown,
    auth::Secret,
    client,
    ids::ProcessRef,
    proto::{
        Decommission, Heartbeat, MasterMessage, Register, WorkerMessage, master_message,
        worker_message::Msg,
    },
};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{
    error::{Error, Result},
    keeper::boottime_ns,
    lease::{InFlight, LeaseClock},
    log_shipping::Shipper,
    logs,
    orders::{self, Inventory},
    runner::{Report, Runner},
    tunnels::TunnelClient,
};

/// Terminal reports kept for re-sending until the master confirms them. They pile up only
/// while the master is away; past this many the oldest are dropped, and the next registration
/// does not claim to list everything (the master then treats what is missing as lost, never
/// as a launch that did not arrive, which it would run again).
const MAX_UNCONFIRMED: usize = 4096;

/// What has been sent to the master and not yet confirmed, across sessions.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Terminal reports with their numbers, oldest first.
    unconfirmed: VecDeque<(u64, Report)>,
    /// The number of the last terminal report kept.
    reports: u64,
    /// The number of the last heartbeat sent, over the worker's life.
    heartbeats: u64,
    /// This session's heartbeats awaiting their acknowledgement.
    in_flight: InFlight,
    /// The lease the master gives (its worker timeout); zero until told.
    lease_for: Duration,
    /// Unconfirmed reports were dropped: until all kept ones are confirmed, registrations do
    /// not claim `keeps_reports`.
    dropped: bool,
    /// The newest master term seen: a master of an older one no longer leads, and nothing it
    /// says is obeyed.
    epoch: u64,
    /// When this session's master last acknowledged a heartbeat (or registered this worker).
    heard_at: Option<tokio::time::Instant>,
}

impl Delivery {
    fn keep_if_terminal(&mut self, report: Report) {
        if report.outcome.is_terminal() {
            if self.unconfirmed.len() >= MAX_UNCONFIRMED {
                self.unconfirmed.pop_front();
                self.dropped = true;
            }
            self.reports += 1;
            self.unconfirmed.push_back((self.reports, report));
        }
    }

    /// Whether the next heartbeat asks for an answer on its own account: a report waits to be
    /// confirmed, or the master was last heard long enough ago (see `hearth_common::heartbeat`).
    /// A lease to renew asks too; the caller knows of that.
    fn answer_wanted(&self, interval: Duration) -> bool {
        !self.unconfirmed.is_empty()
            || self
                .heard_at
                .is_none_or(|at| hearth_common::heartbeat::answer_due(at.elapsed(), interval))
    }

    /// A heartbeat that asks for no answer: the worker is alive, nothing more.
    fn quiet_heartbeat() -> WorkerMessage {
        WorkerMessage {
            msg: Some(Msg::Heartbeat(Heartbeat { seq: 0 })),
        }
    }

    /// The next heartbeat that asks for an answer, noted as sent now.
    fn heartbeat(&mut self) -> WorkerMessage {
        self.heartbeats += 1;
        self.in_flight
            .sent(self.heartbeats, boottime_ns(), self.reports);
        WorkerMessage {
            msg: Some(Msg::Heartbeat(Heartbeat {
                seq: self.heartbeats,
            })),
        }
    }

    /// The master committed everything sent before heartbeat `seq`.
    fn acknowledged(&mut self, seq: u64, lease: &LeaseClock) {
        self.heard_at = Some(tokio::time::Instant::now());
        if let Some((sent_ns, reports_before)) = self.in_flight.acknowledged(seq) {
            if !self.lease_for.is_zero() {
                lease.extend(sent_ns, self.lease_for);
            }
            while self
                .unconfirmed
                .front()
                .is_some_and(|(n, _)| *n <= reports_before)
            {
                self.unconfirmed.pop_front();
            }
            if self.unconfirmed.is_empty() {
                self.dropped = false;
            }
        }
    }
}

/// Who this worker is and what it offers, sent in every Register.
#[derive(Debug, Clone)]
pub struct Identity {
    pub worker_id: String,
    pub name: String,
    pub host: String,
    pub web_port: u32,
    pub cores: u32,
    pub memory_mb: u64,
    pub labels: std::collections::HashMap<String, String>,
    /// Named resources it offers (GPUs and the like).
    pub resources: Vec<hearth_common::proto::ResourceAddresses>,
    /// How its GPUs are named to CUDA.
    pub gpus: orders::GpuView,
}

impl Identity {
    /// The `Register` message saying who this worker is and what it still holds.
    pub fn register(&self, inventory: Inventory) -> Register {
        Register {
            worker_id: self.worker_id.clone(),
            name: self.name.clone(),
            host: self.host.clone(),
            web_port: self.web_port,
            cores: self.cores,
            memory_mb: self.memory_mb,
            running: inventory.running,
            completed: inventory.completed,
            running_executors: inventory.running_executors,
            completed_executors: inventory.completed_executors,
            labels: self.labels.clone(),
            resources: self.resources.clone(),
            keeps_reports: false,
        }
    }
}

/// Jittered exponential back-off: 100 ms doubling up to 10 s, each delay drawn from
/// [half, full] so a restarted master is not hit by every worker at once.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            next: min,
            min,
            max,
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }

    pub fn next_delay(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = full / 2;
        half + Duration::from_secs_f64(rand::rng().random::<f64>() * half.as_secs_f64())
    }
}

pub struct Connection {
    pub identity: Identity,
    pub master_url: String,
    pub secret: Option<Secret>,
    pub tls: client::ClientTls,
    pub runner: Runner,
    pub reports: mpsc::UnboundedReceiver<Report>,
    /// Where drivers here are reached (HEARTH_DRIVER_HOST): the advertised host, replaced by
    /// the address the master sees once registered.
    pub driver_host: String,
    pub work_dir: PathBuf,
    /// How long leaving may wait for the processes to die.
    pub kill_limit: Duration,
    /// How long running processes may go on after SIGTERM before the rest are killed.
    pub decommission_grace: Duration,
    /// True while registered; read by `/readyz`.
    pub registered: Arc<AtomicBool>,
    /// The tails of logs, shipped to the master to keep.
    pub shipper: Shipper,
    /// How often running processes' new output is shipped.
    pub ship_interval: Duration,
    /// Drivers' web UIs, on a connection of their own.
    pub tunnels: TunnelClient,
    /// How long the master has vouched for this worker.
    pub lease: LeaseClock,
    /// Reports and heartbeats awaiting the master's confirmation.
    pub state: Delivery,
    pub shutdown: Shutdown,
}

impl Connection {
    /// Runs until shutdown.
    pub async fn run(mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        while !self.shutdown.is_cancelled() {
            let result = self.session(&mut backoff).await;
            self.registered.store(false, Ordering::Relaxed);
            match result {
                Ok(()) => {}
                Err(Error::Stream(status)) if status.code() == tonic::Code::Unauthenticated => {
                    tracing::error!(worker_id = %self.identity.worker_id, error = %status.message(),
                        "the master refused this worker's secret");
                }
                Err(e) => {
                    tracing::warn!(worker_id = %self.identity.worker_id, master = %self.master_url, error = %e,
                        "not connected to the master");
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn register_message(&mut self) -> WorkerMessage {
        // Running first, then the reports: a driver that ends in between is in both, never in
        // neither (the runner reports under the lock it removes the driver with).
        let running = self.runner.running_or_queued();
        while let Ok(report) = self.reports.try_recv() {
            if report.outcome.is_terminal() {
                self.shipper.ended(report.process.clone(), report.attempt);
            }
            self.state.keep_if_terminal(report);
        }
        let inventory = Inventory::new(running, self.state.unconfirmed.iter().map(|(_, r)| r));
        let mut register = self.identity.register(inventory);
        register.keeps_reports = !self.state.dropped;
        WorkerMessage {
            msg: Some(Msg::Register(register)),
        }
    }

    async fn session(&mut self, backoff: &mut Backoff) -> Result<()> {
        let register = self.register_message();
        self.state.in_flight = InFlight::default();
        // The lease runs from before the registration was sent.
        let register_sent_ns = boottime_ns();
        let (up, up_rx) = mpsc::channel::<WorkerMessage>(1024);
        let connect = async {
            let channel = client::channel(&self.master_url, &self.tls).await?;
            let mut grpc = client::worker_client(channel, self.secret.as_ref())?;
            up.send(register).await.map_err(|_| Error::Closed)?;
            let mut inbound = grpc.session(ReceiverStream::new(up_rx)).await?.into_inner();
            match inbound.message().await? {
                Some(MasterMessage {
                    msg: Some(master_message::Msg::Registered(r)),
                    epoch,
                }) => Ok((inbound, r, epoch)),
                Some(_) => Err(Error::Protocol),
                None => Err(Error::Closed),
            }
        };
        // A master that cannot be reached must not hold up the worker's exit.
        let shutdown = self.shutdown.clone();
        let (mut inbound, registered, epoch) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            connected = connect => connected?,
        };
        if epoch < self.state.epoch {
            return Err(Error::StaleMaster {
                epoch,
                newest: self.state.epoch,
            });
        }
        if epoch > self.state.epoch {
            tracing::info!(worker_id = %self.identity.worker_id, epoch, "a master term newer than any seen");
            self.state.epoch = epoch;
        }
        self.state.heard_at = Some(tokio::time::Instant::now());
        // The reports it carried stay until a heartbeat after them is acknowledged: the master
        // answers Registered before it has committed what they say.
        self.state.lease_for = Duration::from_millis(registered.lease_ms);
        if registered.lease_ms > 0 {
            self.lease.extend(register_sent_ns, self.state.lease_for);
        }
        self.shipper.reconnected();
        backoff.reset();
        self.registered.store(true, Ordering::Relaxed);
        if !registered.host.is_empty() {
            self.driver_host = registered.host.clone();
        }
        let mut interval = heartbeat_interval(registered.heartbeat_interval_ms);
        tracing::info!(worker_id = %self.identity.worker_id, master = %self.master_url,
            seen_as = %registered.host, heartbeat_ms = interval.as_millis() as u64, "registered with the master");

        // A large cluster asks for heartbeats further apart than a quarter of the lease; a
        // worker keeping an `at_most_one` process still renews its lease at that rhythm, so
        // the ticks come at the shorter of the two and a heartbeat goes when one is due.
        let tick = match self.state.lease_for {
            lease if lease.is_zero() => interval,
            lease => interval.min(lease / 4).max(Duration::from_millis(50)),
        };
        let mut last_beat = tokio::time::Instant::now();
        let mut heartbeat = tokio::time::interval(tick);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is at once: what ended while disconnected is shipped first.
        let mut ship = tokio::time::interval(self.ship_interval);
        ship.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.leave(up, inbound, &mut heartbeat).await;
                    return Ok(());
                }
                _ = heartbeat.tick() => {
                    // A master that stopped answering (frozen, cut off, replaced by a standby)
                    // is left for a fresh connection, through the Service, to whoever leads.
                    let silence = self.state.lease_for.max(interval * 4);
                    if self.state.heard_at.is_some_and(|at| at.elapsed() > silence) {
                        return Err(Error::MasterSilent(silence));
                    }
                    // Within half a tick of due counts as due: ticks and the interval rarely
                    // line up exactly.
                    let due = last_beat.elapsed() + tick / 2 >= interval;
                    let lease = self.runner.keeps_at_most_one();
                    if due || lease {
                        last_beat = tokio::time::Instant::now();
                        let beat = if lease || self.state.answer_wanted(interval) {
                            self.state.heartbeat()
                        } else {
                            Delivery::quiet_heartbeat()
                        };
                        up.send(beat).await.map_err(|_| Error::Closed)?;
                    }
                }
                // An at-most-one process about to start wants its lease renewed now.
                _ = self.lease.renewal_wanted() => {
                    last_beat = tokio::time::Instant::now();
                    up.send(self.state.heartbeat())
                        .await
                        .map_err(|_| Error::Closed)?;
                }
                _ = ship.tick() => {
                    let running = self.runner.running();
                    self.ship_logs(Some(running), &up).await?;
                }
                report = self.reports.recv() => {
                    let Some(report) = report else { return Ok(()) };
                    // Kept before it is sent: a heartbeat sent after it confirms it.
                    self.state.keep_if_terminal(report.clone());
                    self.report(report, &up).await?;
                }
                message = inbound.message() => {
                    match message? {
                        Some(MasterMessage { msg: Some(order), epoch }) if epoch >= self.state.epoch => {
                            if let master_message::Msg::HeartbeatAck(ack) = &order
                                && ack.heartbeat_interval_ms > 0
                            {
                                interval = heartbeat_interval(ack.heartbeat_interval_ms);
                                tracing::info!(worker_id = %self.identity.worker_id,
                                    heartbeat_ms = interval.as_millis() as u64,
                                    "the master asks for heartbeats at a new interval");
                            }
                            self.obey(order, &up);
                        }
                        Some(MasterMessage { epoch, .. }) if epoch < self.state.epoch => {
                            tracing::warn!(worker_id = %self.identity.worker_id, epoch,
                                newest = self.state.epoch, "refused an order from a master that no longer leads");
                            return Err(Error::StaleMaster { epoch, newest: self.state.epoch });
                        }
                        Some(MasterMessage { .. }) => {}
                        None => return Err(Error::Closed),
                    }
                }
            }
        }
    }

    /// Leaves the cluster in order: tells the master (so nothing new is placed here), lets
    /// running drivers and executors finish for up to the decommission grace while still
    /// obeying the master (kills, log reads), kills what is left while still connected so
    /// their ends are reported (and supervised drivers relaunched elsewhere), then closes the
    /// stream and waits briefly for the master to close its side, which it does after handling
    /// everything sent before.
    async fn leave(
        &mut self,
        up: mpsc::Sender<WorkerMessage>,
        mut inbound: tonic::Streaming<MasterMessage>,
        heartbeat: &mut tokio::time::Interval,
    ) {
        let worker_id = self.identity.worker_id.clone();
        let running = self.runner.count();
        tracing::info!(worker_id = %worker_id, running,
            grace_ms = self.decommission_grace.as_millis() as u64, "decommissioning");
        let reason = format!("{worker_id} stopping");
        let _ = up
            .send(WorkerMessage {
                msg: Some(Msg::Decommission(Decommission {
                    reason: reason.clone(),
                })),
            })
            .await;

        let deadline = tokio::time::Instant::now() + self.decommission_grace;
        let mut poll = tokio::time::interval(Duration::from_millis(50));
        // When the master goes away meanwhile, the processes still get their grace.
        let mut master_open = true;
        while self.runner.count() > 0 {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = poll.tick() => {}
                _ = heartbeat.tick() => {
                    let _ = up.send(self.state.heartbeat()).await;
                }
                Some(report) = self.reports.recv() => {
                    self.state.keep_if_terminal(report.clone());
                    let _ = self.report(report, &up).await;
                }
                message = inbound.message(), if master_open => match message {
                    Ok(Some(MasterMessage { msg: Some(order), epoch })) if epoch >= self.state.epoch => {
                        self.obey(order, &up);
                    }
                    Ok(Some(MasterMessage { .. })) => {}
                    Ok(None) | Err(_) => {
                        tracing::warn!(worker_id = %worker_id,
                            "the master closed the stream while decommissioning");
                        master_open = false;
                    }
                },
            }
        }
        let left = self.runner.count();
        if left > 0 {
            tracing::info!(worker_id = %worker_id, left, "decommission grace over; killing the rest");
        }

        let runner = self.runner.clone();
        let kill_all = runner.kill_all(&reason, self.kill_limit);
        tokio::pin!(kill_all);
        loop {
            tokio::select! {
                _ = &mut kill_all => break,
                _ = heartbeat.tick() => {
                    let _ = up.send(self.state.heartbeat()).await;
                }
                Some(report) = self.reports.recv() => {
                    self.state.keep_if_terminal(report.clone());
                    let _ = self.report(report, &up).await;
                }
            }
        }
        while let Ok(report) = self.reports.try_recv() {
            self.state.keep_if_terminal(report.clone());
            let _ = self.report(report, &up).await;
        }
        drop(up);
        if master_open {
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Ok(Some(_)) = inbound.message().await {}
            })
            .await;
        }
    }

    /// Sends a process's report; an ended one's last output goes first, so the master holds
    /// it by the time it learns of the end.
    async fn report(&self, report: Report, up: &mpsc::Sender<WorkerMessage>) -> Result<()> {
        if report.outcome.is_terminal() {
            self.shipper.ended(report.process.clone(), report.attempt);
            self.ship_logs(None, up).await?;
        }
        up.send(WorkerMessage {
            msg: Some(orders::status_message(report)),
        })
        .await
        .map_err(|_| Error::Closed)
    }

    /// Ships what ended processes, and (given `running`) running ones, wrote since the last
    /// round.
    async fn ship_logs(
        &self,
        running: Option<Vec<(ProcessRef, u32)>>,
        up: &mpsc::Sender<WorkerMessage>,
    ) -> Result<()> {
        let shipper = self.shipper.clone();
        let pieces = tokio::task::spawn_blocking(move || shipper.round(running.as_deref()))
            .await
            .unwrap_or_default();
        for piece in pieces {
            up.send(WorkerMessage {
                msg: Some(Msg::LogTail(piece)),
            })
            .await
            .map_err(|_| Error::Closed)?;
        }
        Ok(())
    }

    fn obey(&mut self, order: master_message::Msg, up: &mpsc::Sender<WorkerMessage>) {
        match order {
            master_message::Msg::HeartbeatAck(ack) => {
                self.state.acknowledged(ack.seq, &self.lease);
            }
            master_message::Msg::LaunchDriver(launch) => {
                tracing::info!(worker_id = %self.identity.worker_id, driver_id = %launch.driver_id,
                    attempt = launch.attempt, "launch ordered");
                self.runner.launch(orders::driver_launch(
                    launch,
                    &self.driver_host,
                    &self.identity.gpus,
                ));
            }
            master_message::Msg::KillDriver(kill) => {
                tracing::info!(worker_id = %self.identity.worker_id, driver_id = %kill.driver_id,
                    attempt = kill.attempt, reason = %kill.reason, "kill ordered");
                let process = ProcessRef::Driver(kill.driver_id);
                if kill.preempted {
                    let grace = Duration::from_millis(kill.grace_ms);
                    self.runner
                        .preempt(&process, kill.attempt, kill.reason, grace);
                } else {
                    self.runner.kill(&process, kill.attempt, kill.reason);
                }
            }
            master_message::Msg::LaunchExecutor(launch) => {
                tracing::info!(worker_id = %self.identity.worker_id, app_id = %launch.app_id,
                    executor_id = launch.executor_id, "executor launch ordered");
                self.runner
                    .launch(orders::executor_launch(launch, &self.identity.gpus));
            }
            master_message::Msg::KillExecutor(kill) => {
                tracing::info!(worker_id = %self.identity.worker_id, app_id = %kill.app_id,
                    executor_id = kill.executor_id, reason = %kill.reason, "executor kill ordered");
                let process = ProcessRef::Executor {
                    app_id: kill.app_id,
                    executor_id: kill.executor_id,
                };
                if kill.preempted {
                    let grace = Duration::from_millis(kill.grace_ms);
                    self.runner.preempt(&process, 0, kill.reason, grace);
                } else {
                    self.runner.kill(&process, 0, kill.reason);
                }
            }
            master_message::Msg::ReadLog(request) => {
                let work_dir = self.work_dir.clone();
                let up = up.clone();
                tokio::spawn(async move {
                    let data =
                        tokio::task::spawn_blocking(move || logs::read_chunk(&work_dir, &request))
                            .await;
                    if let Ok(data) = data {
                        let _ = up
                            .send(WorkerMessage {
                                msg: Some(Msg::LogData(data)),
                            })
                            .await;
                    }
                });
            }
            master_message::Msg::OpenTunnel(open) => {
                // Only to a driver running here: the master asks for its UI port, nothing else.
                let here = self
                    .runner
                    .running()
                    .iter()
                    .any(|(p, _)| matches!(p, ProcessRef::Driver(d) if *d == open.driver_id));
                let refused =
                    (!here).then(|| format!("{} does not run on this worker", open.driver_id));
                tracing::debug!(worker_id = %self.identity.worker_id, driver_id = %open.driver_id,
                    port = open.port, "driver UI tunnel ordered");
                let tunnels = self.tunnels.clone();
                tokio::spawn(async move { tunnels.serve(open, refused).await });
            }
            master_message::Msg::Registered(_) => {}
        }
    }
}

/// The heartbeat interval the master asked for, within what a worker takes (50 ms to 1 min).
fn heartbeat_interval(ms: u64) -> Duration {
    Duration::from_millis(ms.clamp(50, 60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stay_until_confirmed_and_a_drop_is_owned_up_to() {
        let report = |n: u32| Report {
            process: ProcessRef::Driver(format!("driver-{n}")),
            attempt: 1,
            outcome: crate::runner::Outcome::Finished,
            exit_code: Some(0),
            message: String::new(),
        };
        let lease = LeaseClock::default();
        let mut delivery = Delivery::default();
        for n in 0..MAX_UNCONFIRMED as u32 {
            delivery.keep_if_terminal(report(n));
        }
        assert!(!delivery.dropped);
        delivery.keep_if_terminal(report(u32::MAX));
        assert!(delivery.dropped, "the oldest report went unconfirmed");
        assert_eq!(delivery.unconfirmed.len(), MAX_UNCONFIRMED);
        // A heartbeat after them all, acknowledged: the master holds them, and nothing is
        // missing any more.
        let Some(Msg::Heartbeat(beat)) = delivery.heartbeat().msg else {
            panic!("a heartbeat");
        };
        delivery.acknowledged(beat.seq + 1, &lease);
        assert_eq!(
            delivery.unconfirmed.len(),
            MAX_UNCONFIRMED,
            "an unknown number confirms nothing"
        );
        delivery.acknowledged(beat.seq, &lease);
        assert!(delivery.unconfirmed.is_empty());
        assert!(!delivery.dropped);
    }

    #[test]
    fn a_heartbeat_asks_for_an_answer_while_a_report_waits_or_the_master_was_long_unheard() {
        let interval = Duration::from_secs(10);
        let lease = LeaseClock::default();
        let mut delivery = Delivery::default();
        assert!(
            delivery.answer_wanted(interval),
            "never heard: the first heartbeat asks"
        );
        let Some(Msg::Heartbeat(beat)) = delivery.heartbeat().msg else {
            panic!("a heartbeat");
        };
        assert!(beat.seq > 0);
        delivery.acknowledged(beat.seq, &lease);
        assert!(
            !delivery.answer_wanted(interval),
            "just answered, nothing waits: the next asks for none"
        );
        let Some(Msg::Heartbeat(quiet)) = Delivery::quiet_heartbeat().msg else {
            panic!("a heartbeat");
        };
        assert_eq!(quiet.seq, 0, "0 asks the master for no answer");
        delivery.keep_if_terminal(Report {
            process: ProcessRef::Driver("driver-1".into()),
            attempt: 1,
            outcome: crate::runner::Outcome::Finished,
            exit_code: Some(0),
            message: String::new(),
        });
        assert!(
            delivery.answer_wanted(interval),
            "a report waits to be confirmed"
        );
        let Some(Msg::Heartbeat(beat)) = delivery.heartbeat().msg else {
            panic!("a heartbeat");
        };
        delivery.acknowledged(beat.seq, &lease);
        assert!(!delivery.answer_wanted(interval));
        delivery.heard_at = tokio::time::Instant::now().checked_sub(interval * 2);
        assert!(
            delivery.answer_wanted(interval),
            "the last answer is two intervals old"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..20 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(10));
        }
        let late = b.next_delay();
        assert!(late >= Duration::from_secs(5), "{late:?}");
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
