//! Two masters, one leading: the Lease that elects the leader and numbers its terms
//! ([`election`]), the stream that copies every committed turn to the standby before it is
//! acknowledged ([`replication`] on the leader, [`follower`] on the standby), and what the
//! standby serves while it waits ([`standby`]).

pub mod election;
pub mod follower;
pub mod replication;
pub mod standby;
pub mod term;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::{mpsc, oneshot};

/// Leader election and replication settings (`--lease` and the flags beside it).
#[derive(Debug, Clone)]
pub struct HaConfig {
    pub namespace: String,
    /// The Lease's name.
    pub lease: String,
    /// This master (its pod's name). Each process holds the Lease as `IDENTITY/NONCE`.
    pub identity: String,
    /// Where the other master reaches this one's gRPC port while it leads.
    pub advertise_url: String,
    /// How long the standby waits, after it last saw the Lease change, before it may take it.
    pub lease_duration: Duration,
    /// How long a leader acts after it sent its last successful renewal.
    pub renew_deadline: Duration,
    /// How often the leader renews and the standby looks.
    pub retry_period: Duration,
    /// How long the leader waits for the standby to confirm a turn before it drops the standby
    /// from sync (recorded in the Lease first) and goes on alone.
    pub replication_timeout: Duration,
}

/// Defaults for a failover in about 3.5 s: see the README's "Running a standby master".
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(3);
pub const DEFAULT_RENEW_DEADLINE: Duration = Duration::from_secs(2);
pub const DEFAULT_RETRY_PERIOD: Duration = Duration::from_millis(500);
pub const DEFAULT_REPLICATION_TIMEOUT: Duration = Duration::from_millis(1000);

impl HaConfig {
    /// The timing must leave a leader time to stop before the standby can start.
    pub fn validate(&self) -> Result<(), String> {
        if self.identity.is_empty() || self.identity.contains('/') {
            return Err(format!(
                "--identity {:?}: must be non-empty and without '/'",
                self.identity
            ));
        }
        if self.lease.is_empty() {
            return Err("--lease: must name the Lease".into());
        }
        if self.retry_period.is_zero() || self.renew_deadline <= self.retry_period {
            return Err(format!(
                "--renew-deadline ({:?}) must be longer than --retry-period ({:?}), which must not be zero",
                self.renew_deadline, self.retry_period
            ));
        }
        // A margin of a retry period for the two clocks' rates and the standby's own look.
        if self.lease_duration < self.renew_deadline + self.retry_period {
            return Err(format!(
                "--lease-duration ({:?}) must be at least --renew-deadline + --retry-period ({:?})",
                self.lease_duration,
                self.renew_deadline + self.retry_period
            ));
        }
        if self.replication_timeout >= self.renew_deadline {
            return Err(format!(
                "--replication-timeout ({:?}) must be shorter than --renew-deadline ({:?})",
                self.replication_timeout, self.renew_deadline
            ));
        }
        Ok(())
    }
}

/// A request to name (or stop naming) a standby as in sync in the Lease.
pub type SyncRequest = (Option<String>, oneshot::Sender<bool>);

/// This process's right to act: its term's epoch and until when it may act. Shared by the
/// actor (which checks it before it answers or sends an order) and the task that renews it.
#[derive(Debug)]
pub struct Leadership {
    pub epoch: u64,
    base: Instant,
    /// Nanoseconds after `base`; `u64::MAX`: no Lease, a single master that always acts.
    until_ns: AtomicU64,
    sync: Option<mpsc::Sender<SyncRequest>>,
}

impl Leadership {
    /// A master without a Lease: one master, always acting, epoch 0.
    pub fn single() -> Arc<Self> {
        Arc::new(Self {
            epoch: 0,
            base: Instant::now(),
            until_ns: AtomicU64::new(u64::MAX),
            sync: None,
        })
    }

    pub fn elected(epoch: u64, until: Instant, sync: mpsc::Sender<SyncRequest>) -> Arc<Self> {
        let base = Instant::now();
        let this = Self {
            epoch,
            base,
            until_ns: AtomicU64::new(0),
            sync: Some(sync),
        };
        this.extend(until);
        Arc::new(this)
    }

    /// Whether this process may still act: answer, place, order.
    pub fn acting(&self) -> bool {
        let until = self.until_ns.load(Ordering::Acquire);
        until == u64::MAX || (self.base.elapsed().as_nanos() as u64) < until
    }

    /// Whether it runs under a Lease (with a standby possible).
    pub fn elected_by_lease(&self) -> bool {
        self.sync.is_some()
    }

    pub fn extend(&self, until: Instant) {
        let ns = until.saturating_duration_since(self.base).as_nanos() as u64;
        self.until_ns
            .fetch_max(ns.min(u64::MAX - 1), Ordering::AcqRel);
    }

    /// Stops acting now, for good.
    pub fn stop(&self) {
        self.until_ns.store(0, Ordering::Release);
    }

    /// Asks for `standby` (or none) to be named in the Lease, without waiting; requests are
    /// written in the order they are made.
    pub fn request_in_sync(&self, standby: Option<String>) {
        if let Some(sync) = &self.sync {
            let (tx, _) = oneshot::channel();
            if sync.try_send((standby, tx)).is_err() {
                tracing::warn!(
                    "the Lease writer is behind; the standby's sync state waits for the next renewal"
                );
            }
        }
    }

    /// Names `standby` (or none) as in sync in the Lease; true once the Lease says so.
    pub async fn set_in_sync(&self, standby: Option<String>) -> bool {
        let Some(sync) = &self.sync else {
            return standby.is_none();
        };
        let (tx, rx) = oneshot::channel();
        if sync.send((standby, tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}
