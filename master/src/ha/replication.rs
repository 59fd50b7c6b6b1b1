//! The leader's side of replication. A standby that connects gets the state file as a snapshot
//! (one read transaction: exactly what was committed when it joined), then every turn the actor
//! commits after that, numbered. Once it has confirmed everything sent, it is *in sync*: from
//! then on the actor waits for its confirmation of each turn before anyone is answered, and the
//! Lease names it (so it, and only it, may take over). A standby that does not confirm within
//! the replication timeout is dropped from sync, and the Lease says so, before the turn is
//! acknowledged without it.

use std::sync::Arc;

use hearth_common::proto::{LeaderMessage, ReplicatedRow};
use tokio::sync::{mpsc, watch};

use super::Leadership;
use crate::store::{Changes, Store, rows::Row};

/// Turns buffered for a standby before it is given up on.
pub const TURNS_BUFFER: usize = 16_384;
/// Bytes of rows per snapshot message, about.
const SNAPSHOT_CHUNK_BYTES: usize = 4 << 20;
/// The largest message on the replication stream. A turn is one message, and one turn may
/// carry many submissions of up to the client limit each; the standby is authenticated by the
/// cluster secret, so this is no door for hostile input.
pub const MESSAGE_BYTES: usize = 256 << 20;

/// A committed turn on its way to a standby.
pub type Turn = (u64, Arc<Changes>);

/// A standby that just connected, handed from the gRPC service to the actor.
#[derive(Debug)]
pub struct Joining {
    /// `IDENTITY/NONCE` of the standby process.
    pub standby: String,
    pub snapshot: mpsc::Sender<LeaderMessage>,
    pub turns: mpsc::Sender<Turn>,
    /// The last turn it confirmed; `None` before the snapshot is in.
    pub applied: watch::Receiver<Option<u64>>,
}

/// Where the gRPC service announces standbys. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Joins(mpsc::Sender<Joining>);

impl Joins {
    pub async fn join(&self, joining: Joining) -> bool {
        self.0.send(joining).await.is_ok()
    }
}

#[derive(Debug)]
struct Follower {
    standby: String,
    turns: mpsc::Sender<Turn>,
    applied: watch::Receiver<Option<u64>>,
    in_sync: bool,
}

/// The actor's view of its standby.
#[derive(Debug)]
pub struct Replicas {
    epoch: u64,
    /// The last turn committed (and sent).
    seq: u64,
    joins: mpsc::Receiver<Joining>,
    follower: Option<Follower>,
    /// A standby in sync left between turns: the next turn's acknowledgement waits until the
    /// Lease no longer names it.
    unsync_due: bool,
}

/// What a published turn needs before it may be acknowledged.
#[derive(Debug, Default)]
pub struct Publish {
    /// The standby in sync must confirm this turn.
    pub wait: Option<(u64, watch::Receiver<Option<u64>>)>,
    /// A standby in sync was lost: the Lease must say so first.
    pub unsync: bool,
}

impl Replicas {
    pub fn new(epoch: u64) -> (Self, Joins) {
        let (tx, rx) = mpsc::channel(4);
        (
            Self {
                epoch,
                seq: 0,
                joins: rx,
                follower: None,
                unsync_due: false,
            },
            Joins(tx),
        )
    }

    /// The next standby to connect.
    pub async fn joined(&mut self) -> Option<Joining> {
        self.joins.recv().await
    }

    /// Takes `joining` as the standby (replacing any other) and starts its snapshot: the file
    /// as of the last committed turn. Called between turns, never while one is being written.
    pub fn accept(&mut self, joining: Joining, store: &Arc<Store>) {
        let snapshot = match store.snapshot() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(standby = %joining.standby, error = %e, "cannot read the state file for a standby");
                return;
            }
        };
        if self.follower.as_ref().is_some_and(|f| f.in_sync) {
            self.unsync_due = true;
        }
        let (seq, epoch, tx) = (self.seq, self.epoch, joining.snapshot);
        let standby = joining.standby.clone();
        tokio::task::spawn_blocking(move || {
            let mut first = true;
            let sent = snapshot.chunks(SNAPSHOT_CHUNK_BYTES, |rows| {
                let message = LeaderMessage {
                    seq,
                    epoch,
                    rows: rows.into_iter().map(to_wire).collect(),
                    snapshot: true,
                    snapshot_first: std::mem::take(&mut first),
                    snapshot_last: false,
                };
                tx.blocking_send(message).is_ok()
            });
            if let Err(e) = sent {
                tracing::warn!(standby, error = %e, "reading the snapshot failed");
                return;
            }
            let _ = tx.blocking_send(LeaderMessage {
                seq,
                epoch,
                rows: Vec::new(),
                snapshot: true,
                snapshot_first: first,
                snapshot_last: true,
            });
        });
        tracing::info!(standby = %joining.standby, seq, "a standby joined; sending the snapshot");
        self.follower = Some(Follower {
            standby: joining.standby,
            turns: joining.turns,
            applied: joining.applied,
            in_sync: false,
        });
    }

    /// Sends a committed turn to the standby and says what its acknowledgement must wait for.
    pub fn publish(&mut self, changes: &Arc<Changes>, leadership: &Leadership) -> Publish {
        self.promote(leadership);
        self.seq += 1;
        let mut publish = Publish {
            wait: None,
            unsync: std::mem::take(&mut self.unsync_due),
        };
        let Some(follower) = &self.follower else {
            return publish;
        };
        if follower
            .turns
            .try_send((self.seq, changes.clone()))
            .is_err()
        {
            tracing::warn!(standby = %follower.standby, "the standby fell too far behind or left; going on without it");
            publish.unsync |= follower.in_sync;
            self.follower = None;
            return publish;
        }
        if follower.in_sync {
            publish.wait = Some((self.seq, follower.applied.clone()));
        }
        publish
    }

    /// The standby in sync did not confirm in time: it is dropped.
    pub fn drop_follower(&mut self) {
        if let Some(f) = self.follower.take() {
            tracing::warn!(standby = %f.standby, "the standby did not confirm a turn in time; going on without it");
        }
    }

    /// Drops the standby because its copy may no longer match this master's file (a write
    /// here failed after the turn was sent, or the file was rewritten whole). It reconnects and
    /// starts again from a snapshot. `unsync`: the Lease must stop naming a standby before the
    /// next acknowledgement (kept until [`Replicas::take_unsync`]).
    pub fn forget(&mut self, unsync: bool) {
        if let Some(f) = self.follower.take() {
            tracing::warn!(standby = %f.standby, "the standby's copy may differ from this master's file; it starts again");
            self.unsync_due |= f.in_sync;
        }
        self.unsync_due |= unsync;
    }

    /// Whether the Lease must stop naming a standby before the next acknowledgement; the
    /// caller writes that.
    pub fn take_unsync(&mut self) -> bool {
        std::mem::take(&mut self.unsync_due)
    }

    /// A standby that confirmed everything sent becomes in sync: waited for from the next turn
    /// on, then named in the Lease (in that order, so the Lease never names one that is not
    /// waited for).
    pub fn promote(&mut self, leadership: &Leadership) {
        // The Lease must first stop naming the standby that left (the next turn writes that);
        // naming this one before would be undone by it.
        if self.unsync_due {
            return;
        }
        let Some(f) = &mut self.follower else { return };
        if f.turns.is_closed() {
            tracing::warn!(standby = %f.standby, "the standby left");
            self.unsync_due |= f.in_sync;
            self.follower = None;
            return;
        }
        if !f.in_sync && f.applied.borrow().is_some_and(|a| a >= self.seq) {
            f.in_sync = true;
            tracing::info!(standby = %f.standby, seq = self.seq, "the standby is in sync");
            leadership.request_in_sync(Some(f.standby.clone()));
        }
    }

    /// The standby and how far behind it is, for the UI and `/metrics`.
    pub fn status(&self) -> ReplicationStatus {
        ReplicationStatus {
            standby: self.follower.as_ref().map(|f| f.standby.clone()),
            in_sync: self.follower.as_ref().is_some_and(|f| f.in_sync),
            lag_turns: self.follower.as_ref().map_or(0, |f| {
                self.seq.saturating_sub(f.applied.borrow().unwrap_or(0))
            }),
        }
    }
}

/// What the leader knows of its standby.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicationStatus {
    pub standby: Option<String>,
    pub in_sync: bool,
    /// Turns committed here and not yet confirmed by the standby.
    pub lag_turns: u64,
}

pub fn to_wire(row: Row) -> ReplicatedRow {
    ReplicatedRow {
        table: row.table.to_string(),
        key: row.key,
        delete: row.value.is_none(),
        value: row.value.unwrap_or_default(),
    }
}

/// A turn as the message that carries it.
pub fn turn_message((seq, changes): Turn, epoch: u64) -> LeaderMessage {
    LeaderMessage {
        seq,
        epoch,
        rows: changes.rows().into_iter().map(to_wire).collect(),
        snapshot: false,
        snapshot_first: false,
        snapshot_last: false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    struct Standby {
        snapshot: mpsc::Receiver<LeaderMessage>,
        turns: mpsc::Receiver<Turn>,
        applied: watch::Sender<Option<u64>>,
    }

    fn join(replicas: &mut Replicas, store: &Arc<Store>) -> Standby {
        let (snapshot_tx, snapshot) = mpsc::channel(4);
        let (turns_tx, turns) = mpsc::channel(16);
        let (applied, applied_rx) = watch::channel(None);
        replicas.accept(
            Joining {
                standby: "m2/1".into(),
                snapshot: snapshot_tx,
                turns: turns_tx,
                applied: applied_rx,
            },
            store,
        );
        Standby {
            snapshot,
            turns,
            applied,
        }
    }

    fn turn() -> Arc<Changes> {
        Arc::new(
            Changes::from_rows([Row {
                table: "drivers",
                key: "d".into(),
                value: Some(b"{}".to_vec()),
            }])
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_standby_is_waited_for_once_it_confirmed_everything_and_named_after() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap().0);
        let (sync_tx, mut sync_rx) = mpsc::channel(8);
        let leadership = Leadership::elected(7, Instant::now() + Duration::from_secs(60), sync_tx);
        let (mut replicas, _joins) = Replicas::new(7);
        assert!(
            replicas.publish(&turn(), &leadership).wait.is_none(),
            "no standby yet"
        );
        let mut standby = join(&mut replicas, &store);
        let last = loop {
            let m = standby.snapshot.recv().await.unwrap();
            if m.snapshot_last {
                break m;
            }
        };
        assert_eq!(
            (last.seq, last.epoch),
            (1, 7),
            "the snapshot is as of the last turn"
        );

        // Turn 2 goes out before the standby confirmed the snapshot: not waited for.
        let published = replicas.publish(&turn(), &leadership);
        assert!(published.wait.is_none() && !published.unsync);
        assert_eq!(standby.turns.recv().await.unwrap().0, 2);
        standby.applied.send_replace(Some(1));
        assert!(
            replicas.publish(&turn(), &leadership).wait.is_none(),
            "turn 2 unconfirmed"
        );
        assert!(sync_rx.try_recv().is_err(), "not named while behind");

        standby.applied.send_replace(Some(3));
        let published = replicas.publish(&turn(), &leadership);
        assert_eq!(
            published.wait.map(|(seq, _)| seq),
            Some(4),
            "waited for from now on"
        );
        let (named, _) = sync_rx.try_recv().expect("then named in the Lease");
        assert_eq!(named.as_deref(), Some("m2/1"));
        assert!(replicas.status().in_sync);
    }

    #[tokio::test]
    async fn a_standby_in_sync_that_leaves_holds_the_next_turn_until_the_lease_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap().0);
        let (sync_tx, _sync_rx) = mpsc::channel(8);
        let leadership = Leadership::elected(3, Instant::now() + Duration::from_secs(60), sync_tx);
        let (mut replicas, _joins) = Replicas::new(3);
        let standby = join(&mut replicas, &store);
        standby.applied.send_replace(Some(0));
        replicas.promote(&leadership);
        assert!(replicas.status().in_sync);
        drop(standby);
        // Between turns nothing is answered; the next turn is, only after the Lease is told.
        replicas.promote(&leadership);
        let published = replicas.publish(&turn(), &leadership);
        assert!(published.unsync && published.wait.is_none());
        assert!(!replicas.publish(&turn(), &leadership).unsync, "told once");
    }
}
