//! All cluster state in one plain data structure, and every transition of it.
//!
//! Only the actor changes a `State`; each transition returns the orders it implies for workers
//! as [`Effect`]s, so the transitions stay free of I/O and easy to test. Maps are persistent
//! (`imbl`), so publishing a snapshot after each turn is a cheap clone.
//!
//! - [`workers`]: registration (with fencing), heartbeats, loss and expiry.
//! - [`drivers`]: kills, reports, relaunches.
//! - [`submissions`]: new drivers admitted, retries answered, owners recorded.
//! - [`apps`]: applications: registration, resizing and their end.
//! - [`executors`]: executors: placement, reports and replacement.
//! - [`placement`]: each turn's placement of waiting drivers and wanted executors.
//! - [`queues`]: the queues in force and what each queue's work holds.
//! - [`claims`]: room being freed, held for the work it is freed for.
//! - [`fencing`]: `at_most_one` drivers held back until their last copy has surely stopped.
//! - [`preemption`]: victims chosen, ordered ended with their grace, and what their end means.
//! - [`gang_reservations`]: workers held for gangs that waited too long.
//! - [`reservations`]: room held for the heads of queues that waited too long.
//! - [`invariants`]: the accounting every state keeps, checked by the tests.
//! - [`demand`]: how many workers the waiting work wants, for an autoscaler.
//! - [`recovery`]: rebuilding the state from the store after a restart.
//! - [`time_limits`]: ending what ran past its time limit.
//! - [`stored`]: the shapes of what is kept across restarts.

mod apps;
mod asks_left;
mod claims;
mod demand;
mod drivers;
mod executors;
mod fencing;
mod gang_reservations;
mod held;
mod invariants;
mod offers;
mod placement;
pub use placement::MAX_LAUNCHES_PER_TURN;
mod preemption;
#[cfg(test)]
mod preemption_tests;
mod queues;
mod recovery;
mod reservations;
#[cfg(test)]
mod sharing_tests;
pub mod stored;
mod submissions;
#[cfg(test)]
mod tests;
mod time_limits;
mod workers;

use std::sync::Arc;

use hearth_common::proto::{self, MasterMessage, WorkerState};
use imbl::{OrdMap, OrdSet, Vector};

pub use apps::AppInfo;
pub use demand::Sizing;
pub use drivers::DriverInfo;
pub use executors::{ExecKey, ExecutorInfo};
use placement::Tried;
pub use preemption::PreemptionEvent;
pub use workers::WorkerInfo;

use crate::{
    error::{Error, Result},
    schedule::QueueTree,
    tenants::Tenants,
};

/// An order for a worker that a transition implies; the actor delivers them after the turn.
// Nearly every effect is a `Send`: boxing it would cost an allocation per order to shrink the
// rare `Disconnect`.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    Send {
        worker_id: String,
        message: MasterMessage,
    },
    /// Close the worker's stream (it was declared dead while its stream looked open).
    Disconnect { worker_id: String, conn_id: u64 },
}

impl Effect {
    fn send(worker_id: &str, msg: hearth_common::proto::master_message::Msg) -> Self {
        Effect::Send {
            worker_id: worker_id.to_string(),
            message: MasterMessage {
                msg: Some(msg),
                epoch: 0,
            },
        }
    }
}

/// The whole cluster as the master knows it.
#[derive(Debug, Clone)]
pub struct State {
    pub started_ms: i64,
    pub master_url: String,
    pub workers: OrdMap<String, Arc<WorkerInfo>>,
    pub drivers: OrdMap<String, Arc<DriverInfo>>,
    /// Drivers waiting for a slot (SUBMITTED or RELAUNCHING), oldest first.
    pub waiting: Vector<String>,
    /// Terminal drivers, oldest first, for retention.
    pub completed: Vector<String>,
    /// `at_most_one` drivers waiting to be relaunched, held out of `waiting` until their last
    /// copy has surely stopped.
    pub fenced: OrdSet<String>,
    /// After a restart with a shorter worker timeout: when the longer leases granted before
    /// have surely ended, and the lease to count with from then on.
    pub lease_lowers: Option<(tokio::time::Instant, u64)>,
    pub next_driver_seq: u64,
    /// What the state admits and keeps, and how it places executors.
    pub limits: Limits,
    pub apps: OrdMap<String, Arc<AppInfo>>,
    /// Applications not yet ended, in registration order (the order executors are placed in).
    pub active_apps: Vector<String>,
    /// Ended applications, oldest first, for retention.
    pub completed_apps: Vector<String>,
    pub next_app_seq: u64,
    /// Client submission ids of retained drivers, to answer a resubmission with its driver.
    pub submissions: OrdMap<String, String>,
    /// Set after a restart until the workers it knew have come back (or the timeout passed):
    /// nothing is placed meanwhile, so nothing a returning worker still runs is started twice.
    pub recovering: bool,
    /// The queues in force (from the queues file; `default` alone without one). Not kept in
    /// the store: the file is read again at start.
    pub queues: Arc<QueueTree>,
    /// Who may submit with a token of their own, from the same file.
    pub tenants: Arc<Tenants>,
    /// Why the queues file last read was refused, while the queues in force are older.
    pub queues_refused: Option<String>,
    /// How many times the queues file was refused since the master started.
    pub queue_files_refused: u64,
    /// Waiting drivers holding a reservation, and the worker each holds. Not kept in the store:
    /// made again after a restart from how long each has waited.
    pub reservations: std::collections::BTreeMap<String, String>,
    /// When the queue heads were last checked for a reservation due.
    reservations_checked_ms: i64,
    /// Each queue's recent dominant share, decayed by `usage_half_life_ms`. Not kept in the
    /// store: a restarted master starts from what runs.
    pub recent_use: std::collections::BTreeMap<String, f64>,
    recent_updated_ms: i64,
    /// What the last placement of drivers left, so the next one need not try again the
    /// drivers that would wait again. Shared with the snapshots: it names every worker.
    tried: Option<Arc<Tried>>,
    /// Each queue's head among the first drivers waiting, so the once-a-second look for a
    /// reservation due reads only the drivers that joined since.
    heads: Option<Arc<reservations::Heads>>,
    /// What running drivers hold by queue, counted from the changes since the last count.
    held: held::HeldCache,
    /// What alive workers offer, made from the changes since the last time.
    offers: offers::OffersCache,
    /// The asks of the drivers a turn stopped at its bound left waiting.
    asks_left: asks_left::AsksLeft,
    /// The last turn stopped at its bound with drivers it did not look at.
    more_to_place: bool,
    /// No running driver reaches its time limit before this (`None`: not known yet).
    limits_quiet_until_ms: Option<i64>,
    /// When preemptions were last looked for.
    preemption_checked_ms: i64,
    /// Room being freed by preemption, by the driver or application it is for.
    claims: std::collections::BTreeMap<String, claims::Claim>,
    claim_seq: u64,
    /// Preemptions ordered since the master started, by the victim's queue, the rule and the
    /// kind of victim (`driver`, `executor`).
    pub preemptions_total: std::collections::BTreeMap<(String, &'static str, &'static str), u64>,
}

/// The settings that shape what the state admits and keeps and how it places executors, given
/// once to [`State::new`] or [`State::recover`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How many completed drivers are kept.
    pub retained_drivers: usize,
    /// How many ended applications are kept.
    pub retained_apps: usize,
    /// Most drivers waiting for a slot; a new submission beyond it is refused.
    pub max_waiting: usize,
    /// Deal executors round-robin over workers (true) or fill one worker first (false).
    pub spread_out: bool,
    /// How long the head of a queue waits for room before it reserves a worker; `None`: never.
    pub reserve_after_ms: Option<u64>,
    /// The half-life of the recent use fair shares count besides the current; `None`: current
    /// use only.
    pub usage_half_life_ms: Option<u64>,
    /// How long a worker may run `at_most_one` drivers after the master last heard from it:
    /// the worker timeout.
    pub lease_ms: u64,
}

impl Limits {
    /// Keeps `retained` drivers and applications, queues without bound, spreads executors out.
    pub fn retaining(retained: usize) -> Self {
        Self {
            retained_drivers: retained,
            retained_apps: retained,
            max_waiting: usize::MAX,
            spread_out: true,
            reserve_after_ms: None,
            usage_half_life_ms: None,
            lease_ms: 10_000,
        }
    }
}

impl State {
    pub fn new(master_url: String, started_ms: i64, limits: Limits) -> Self {
        Self {
            started_ms,
            master_url,
            workers: OrdMap::new(),
            drivers: OrdMap::new(),
            waiting: Vector::new(),
            completed: Vector::new(),
            fenced: OrdSet::new(),
            lease_lowers: None,
            next_driver_seq: 0,
            limits,
            apps: OrdMap::new(),
            active_apps: Vector::new(),
            completed_apps: Vector::new(),
            next_app_seq: 0,
            submissions: OrdMap::new(),
            recovering: false,
            queues: Arc::new(QueueTree::default()),
            tenants: Arc::new(Tenants::default()),
            queues_refused: None,
            queue_files_refused: 0,
            reservations: Default::default(),
            reservations_checked_ms: 0,
            recent_use: Default::default(),
            recent_updated_ms: 0,
            tried: None,
            heads: None,
            held: Default::default(),
            offers: Default::default(),
            asks_left: Default::default(),
            more_to_place: false,
            limits_quiet_until_ms: None,
            preemption_checked_ms: 0,
            claims: Default::default(),
            claim_seq: 0,
            preemptions_total: Default::default(),
        }
    }

    pub fn driver(&self, id: &str) -> Result<&Arc<DriverInfo>> {
        self.drivers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no driver {id}")))
    }

    pub fn worker(&self, id: &str) -> Result<&Arc<WorkerInfo>> {
        self.workers
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no worker {id}")))
    }

    pub fn app(&self, id: &str) -> Result<&Arc<AppInfo>> {
        self.apps
            .get(id)
            .ok_or_else(|| Error::NotFound(format!("no application {id}")))
    }

    /// Where a process's logs are: its worker (if it was ever placed) and whether it has ended.
    pub fn log_source(
        &self,
        process: &hearth_common::ids::ProcessRef,
    ) -> Result<(Option<String>, bool)> {
        use hearth_common::ids::ProcessRef;
        match process {
            ProcessRef::Driver(id) => {
                let d = self.driver(id)?;
                Ok((d.worker_id.clone(), d.state.is_terminal()))
            }
            ProcessRef::Executor {
                app_id,
                executor_id,
            } => {
                let app = self.app(app_id)?;
                let e = app.executors.get(executor_id).ok_or_else(|| {
                    Error::NotFound(format!("{app_id} has no executor {executor_id}"))
                })?;
                Ok((Some(e.worker_id.clone()), !e.state.is_live()))
            }
        }
    }

    pub fn alive_workers(&self) -> impl Iterator<Item = &Arc<WorkerInfo>> {
        self.workers
            .values()
            .filter(|w| w.state == WorkerState::Alive)
    }

    // ----- resources --------------------------------------------------------------------------

    /// Takes a slot (cores, memory) and the resource addresses `held` on a worker; refuses
    /// (and changes nothing) if it would exceed the offer or an address is not free there.
    fn take_slot(
        &mut self,
        worker_id: &str,
        what: &str,
        (cores, memory_mb): (u32, u64),
        held: &[proto::ResourceAddresses],
    ) -> Result<&mut WorkerInfo> {
        let w = self
            .workers
            .get_mut(worker_id)
            .ok_or_else(|| Error::NotFound(format!("no worker {worker_id}")))?;
        let fits = w.free_cores() >= cores && w.free_memory_mb() >= memory_mb;
        if !fits {
            return Err(Error::Internal(format!(
                "{what} does not fit on {worker_id}: {cores} cores/{memory_mb} MiB asked, {} / {} free",
                w.free_cores(),
                w.free_memory_mb()
            )));
        }
        if !w.can_hold(held) {
            return Err(Error::Internal(format!(
                "{what} does not fit on {worker_id}: its resource addresses are not all offered \
                 and free there"
            )));
        }
        let w = Arc::make_mut(w);
        w.cores_used += cores;
        w.memory_used_mb += memory_mb;
        w.hold(held);
        Ok(w)
    }

    /// The addresses `what` is given on `worker_id` for `asked` (none when it asks for none).
    fn pick_resources(
        &self,
        worker_id: &str,
        what: &str,
        asked: &std::collections::HashMap<String, u32>,
    ) -> Result<Vec<proto::ResourceAddresses>> {
        if asked.is_empty() {
            return Ok(Vec::new());
        }
        self.worker(worker_id)?.pick(asked).ok_or_else(|| {
            Error::Internal(format!(
                "{what} does not fit on {worker_id}: not enough free resource addresses"
            ))
        })
    }

    /// Gives back a slot and its resource addresses on a worker (saturating: a slot is never
    /// given back twice because the holder sets say who holds one).
    fn give_back(
        w: &mut WorkerInfo,
        cores: u32,
        memory_mb: u64,
        held: &[proto::ResourceAddresses],
    ) {
        w.cores_used = w.cores_used.saturating_sub(cores);
        w.memory_used_mb = w.memory_used_mb.saturating_sub(memory_mb);
        w.release(held);
    }

    /// Forgets the oldest completed drivers and applications beyond the retention limits.
    pub fn prune(&mut self) {
        while self.completed.len() > self.limits.retained_drivers {
            if let Some(id) = self.completed.pop_front()
                && let Some(d) = self.drivers.remove(&id)
                && let Some(s) = &d.submission_id
            {
                self.submissions.remove(s);
            }
        }
        while self.completed_apps.len() > self.limits.retained_apps {
            if let Some(id) = self.completed_apps.pop_front() {
                self.apps.remove(&id);
            }
        }
    }
}
