//! The leader's Lease (`coordination.k8s.io/v1`): who leads, in which term, where its gRPC port
//! is, and which standby holds every acknowledged turn.
//!
//! The rules, each checked against the API server with the Lease's `resourceVersion`, so two
//! masters can never both win the same change:
//! - no Lease: the first to create it leads, in a first term numbered by the time (see
//!   [`first_epoch`]);
//! - held by an earlier process of this same master (the same identity): this process takes it
//!   at once, in a new term; its own state file holds everything that one acknowledged;
//! - held by the other master: taken only once nothing has changed in it for the lease
//!   duration (or its holder released it), and only by the standby the Lease names as in sync;
//!   a standby that is not could lose acknowledged work, so it waits for the leader instead.
//!
//! Expiry is judged by when this process *saw* the Lease change, never by the times written in
//! it, so the two machines' clocks need not agree; only their rates must. A leader stops
//! acting `renew_deadline` after it *sent* its last successful renewal, which is before the
//! standby can have seen it, and `renew_deadline` is shorter than the lease duration.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};

use super::HaConfig;

/// The gRPC URL of the master holding the Lease.
pub const LEADER_URL: &str = "hearth.dev/leader-url";
/// The standby process (its holder string) the leader waits for before it acknowledges.
pub const IN_SYNC: &str = "hearth.dev/in-sync";
/// Set by a leader that stopped on purpose: the standby in sync need not wait out the lease.
pub const RELEASED: &str = "hearth.dev/released";

/// Why a step could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("the Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the Lease changed under every write (conflict twice)")]
    Conflict,
}

/// The Lease as this master read it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// `IDENTITY/NONCE` of the process holding it.
    pub holder: Option<String>,
    /// Terms so far (`leaseTransitions`): the current leader's epoch.
    pub epoch: u64,
    pub leader_url: Option<String>,
    pub in_sync: Option<String>,
    pub released: bool,
}

impl Seen {
    fn of(lease: &Lease) -> Self {
        let spec = lease.spec.clone().unwrap_or_default();
        let note = |key: &str| {
            lease
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        Self {
            holder: spec.holder_identity.filter(|h| !h.is_empty()),
            epoch: spec
                .lease_transitions
                .map_or(0, |t| u64::try_from(t).unwrap_or(0)),
            leader_url: note(LEADER_URL),
            in_sync: note(IN_SYNC),
            released: note(RELEASED).is_some(),
        }
    }

    /// The identity part of the holder: which master, whatever its process.
    pub fn leader(&self) -> Option<&str> {
        self.holder.as_deref().map(identity_of)
    }
}

/// The first term of a new Lease: the minutes since 2020 at its creation, so that a Lease
/// deleted and made again (to give up on a lost leader) starts above every earlier term, and
/// workers that saw those terms follow the new leader.
pub fn first_epoch(now_ms: i64) -> u64 {
    const START_2020_MS: i64 = 1_577_836_800_000;
    u64::try_from((now_ms - START_2020_MS) / 60_000)
        .unwrap_or(0)
        .max(1)
}

/// `IDENTITY` of `IDENTITY/NONCE`.
pub fn identity_of(holder: &str) -> &str {
    holder.split_once('/').map_or(holder, |(id, _)| id)
}

/// What one look at the Lease decided.
#[derive(Debug)]
pub enum Step {
    /// This process leads, in the term it just took.
    Lead(Box<Term>),
    /// Someone else leads (or may still): as seen.
    Follow(Seen),
}

/// A term this process holds: its epoch, and the Lease as last written.
#[derive(Debug, Clone)]
pub struct Term {
    pub epoch: u64,
    /// When the write that took it was sent: acting is safe until `renew_deadline` after.
    pub sent: Instant,
    lease: Lease,
}

/// Campaigns for and holds the Lease for one master process.
pub struct Elector {
    api: Api<Lease>,
    config: HaConfig,
    /// `IDENTITY/NONCE`: this process.
    pub me: String,
    /// The Lease's version last seen and when it was first seen.
    observed: Option<(String, Instant)>,
}

impl std::fmt::Debug for Elector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Elector").field("me", &self.me).finish()
    }
}

impl Elector {
    /// Through the pod's own service account (in-cluster), or a kubeconfig outside.
    pub async fn connect(config: HaConfig) -> Result<Self, ElectionError> {
        let client = Client::try_default().await?;
        let nonce = format!("{:x}{:x}", hearth_common::ids::now_ms(), std::process::id());
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            me: format!("{}/{nonce}", config.identity),
            config,
            observed: None,
        })
    }

    pub fn config(&self) -> &HaConfig {
        &self.config
    }

    /// A call to the API server, given up after half the renew deadline so a hung one never
    /// holds a leader past it.
    async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ElectionError> {
        let limit = self.config.renew_deadline / 2;
        tokio::time::timeout(limit, call)
            .await
            .map_err(|_| ElectionError::Timeout(limit))?
            .map_err(ElectionError::from)
    }

    /// Reads the Lease and takes it if this process may. `copy_whole`: this process's state
    /// file holds a whole snapshot from the leader and every turn after it that it confirmed.
    pub async fn step(&mut self, copy_whole: bool) -> Result<Step, ElectionError> {
        let sent = Instant::now();
        let Some(lease) = self.call(self.api.get_opt(&self.config.lease)).await? else {
            return self.create(sent).await;
        };
        let version = lease.metadata.resource_version.clone().unwrap_or_default();
        let changed = self.observed.as_ref().is_none_or(|(v, _)| *v != version);
        if changed {
            self.observed = Some((version, Instant::now()));
        }
        let seen = Seen::of(&lease);
        let quiet = self
            .observed
            .as_ref()
            .is_some_and(|(_, at)| at.elapsed() >= self.config.lease_duration);
        let mine = seen.leader() == Some(self.config.identity.as_str());
        let synced = copy_whole && seen.in_sync.as_deref() == Some(self.me.as_str());
        let may_take =
            seen.holder.is_none() && seen.epoch == 0 || mine || synced && (quiet || seen.released);
        if !may_take {
            return Ok(Step::Follow(seen));
        }
        tracing::info!(previous = ?seen.holder, epoch = seen.epoch + 1, "taking the lease");
        let mut taken = lease;
        self.fill(&mut taken, seen.epoch + 1, None);
        match self
            .call(
                self.api
                    .replace(&self.config.lease, &PostParams::default(), &taken),
            )
            .await
        {
            Ok(lease) => Ok(Step::Lead(Box::new(Term {
                epoch: seen.epoch + 1,
                sent,
                lease,
            }))),
            // Someone wrote it since it was read: look again next time.
            Err(ElectionError::Api(kube::Error::Api(e))) if e.code == 409 => Ok(Step::Follow(seen)),
            Err(e) => Err(e),
        }
    }

    async fn create(&mut self, sent: Instant) -> Result<Step, ElectionError> {
        let mut lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.lease.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec::default()),
        };
        let epoch = first_epoch(hearth_common::ids::now_ms());
        self.fill(&mut lease, epoch, None);
        match self
            .call(self.api.create(&PostParams::default(), &lease))
            .await
        {
            Ok(lease) => {
                tracing::info!(epoch, "created the lease");
                Ok(Step::Lead(Box::new(Term { epoch, sent, lease })))
            }
            Err(ElectionError::Api(kube::Error::Api(e))) if e.code == 409 => {
                Ok(Step::Follow(Seen::default()))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes this process into `lease` as its holder in term `epoch`, renewed now.
    fn fill(&self, lease: &mut Lease, epoch: u64, in_sync: Option<&str>) {
        let now = MicroTime(Timestamp::now());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.me.as_str()) {
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.me.clone());
        spec.lease_duration_seconds =
            Some(i32::try_from(self.config.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX));
        spec.lease_transitions = Some(i32::try_from(epoch).unwrap_or(i32::MAX));
        spec.renew_time = Some(now);
        let notes = lease.metadata.annotations.get_or_insert_with(BTreeMap::new);
        notes.insert(LEADER_URL.into(), self.config.advertise_url.clone());
        notes.remove(RELEASED);
        match in_sync {
            Some(standby) => notes.insert(IN_SYNC.into(), standby.to_string()),
            None => notes.remove(IN_SYNC),
        };
    }

    /// Renews `term`, naming `in_sync` as the standby in sync. On success the term may act
    /// until `renew_deadline` after this call began. `Ok(false)`: the Lease is someone else's.
    pub async fn renew(
        &self,
        term: &mut Term,
        in_sync: Option<&str>,
    ) -> Result<bool, ElectionError> {
        // A second try only after a conflict that left the Lease ours (another field changed).
        for _ in 0..2 {
            let sent = Instant::now();
            let mut lease = term.lease.clone();
            self.fill(&mut lease, term.epoch, in_sync);
            match self
                .call(
                    self.api
                        .replace(&self.config.lease, &PostParams::default(), &lease),
                )
                .await
            {
                Ok(lease) => {
                    term.lease = lease;
                    term.sent = sent;
                    return Ok(true);
                }
                Err(ElectionError::Api(kube::Error::Api(e))) if e.code == 409 => {
                    let now = self.call(self.api.get(&self.config.lease)).await?;
                    let seen = Seen::of(&now);
                    if seen.holder.as_deref() != Some(self.me.as_str()) || seen.epoch != term.epoch
                    {
                        return Ok(false);
                    }
                    term.lease = now;
                }
                Err(e) => return Err(e),
            }
        }
        // Not written: the renewal (and what it was to say of the standby) has not happened.
        Err(ElectionError::Conflict)
    }

    /// Marks the Lease released by `term` (after this process stopped acting), so the standby
    /// in sync takes it without waiting out the lease duration.
    pub async fn release(&self, term: &Term, in_sync: Option<&str>) -> Result<(), ElectionError> {
        let mut lease = term.lease.clone();
        self.fill(&mut lease, term.epoch, in_sync);
        if let Some(notes) = lease.metadata.annotations.as_mut() {
            notes.insert(RELEASED.into(), "true".into());
        }
        self.call(
            self.api
                .replace(&self.config.lease, &PostParams::default(), &lease),
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_made_again_later_starts_above_the_terms_of_the_first() {
        let created = first_epoch(1_764_547_200_000); // 2025-12-01
        let a_thousand_failovers_later = created + 1000;
        let made_again_a_day_later = first_epoch(1_764_547_200_000 + 86_400_000);
        assert!(made_again_a_day_later > a_thousand_failovers_later);
        assert!(
            i32::try_from(first_epoch(4_102_444_800_000)).is_ok(),
            "fits the Lease in 2100"
        );
    }

    #[test]
    fn the_holder_names_the_master_whatever_its_process() {
        assert_eq!(
            identity_of("hearth-master-ha-0/19a4f2c1"),
            "hearth-master-ha-0"
        );
        assert_eq!(identity_of("plain"), "plain");
    }
}
