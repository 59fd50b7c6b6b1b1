//! The open streams to workers: how orders and log requests reach them.
//!
//! The actor installs and removes links; gRPC handlers borrow them to ask a worker for log
//! chunks. The lock is never held across an await.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hearth_common::{
    ids::ProcessRef,
    proto::{HeartbeatAck, LogData, LogStream, MasterMessage, ReadLogChunk, master_message::Msg},
};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Log requests waiting for their chunk, by request id.
pub type PendingLogs = Arc<Mutex<HashMap<u64, oneshot::Sender<LogData>>>>;

/// Orders queued for one worker before it counts as stuck (at least; a worker with more cores
/// gets room for one launch per core and some, so a pass that fills it always fits). A worker
/// reads its stream continuously; this many unread orders means it stopped reading, and
/// waiting for it would only grow the master's memory.
pub const ORDER_QUEUE: usize = 1024;

/// Log reads in flight to one worker; more are refused until one is answered, so readers
/// cannot crowd out its orders.
const LOG_READS_IN_FLIGHT: usize = 8;

/// Driver UI connections open through one worker at once.
pub const TUNNELS_PER_WORKER: usize = 32;

/// The order queue for a worker offering `cores`.
pub fn order_queue(cores: u32) -> usize {
    usize::try_from(cores)
        .unwrap_or(usize::MAX)
        .saturating_add(64)
        .max(ORDER_QUEUE)
}

/// One worker's open stream.
#[derive(Debug, Clone)]
pub struct Link {
    pub worker_id: String,
    pub conn_id: u64,
    /// Orders to the worker, bounded by [`ORDER_QUEUE`]. Boxed: the channel keeps blocks of
    /// slots the size of its item, and a launch order is large, so unboxed every idle worker's
    /// channel would hold kilobytes and each heartbeat's answer would be copied whole.
    pub orders: mpsc::Sender<Box<MasterMessage>>,
    /// Ends the stream in both directions at once, even while the worker is not reading.
    pub closed: tokio_util::sync::CancellationToken,
    /// Filled by the stream's reader task when `LogData` arrives.
    pub pending_logs: PendingLogs,
    pub log_reads: Arc<tokio::sync::Semaphore>,
    /// Driver UI tunnels open through this worker, at most [`TUNNELS_PER_WORKER`].
    pub tunnels: Arc<tokio::sync::Semaphore>,
    /// When the worker was last heard on this stream.
    pub heard: Arc<Heard>,
}

/// When a worker was last heard, kept beside its stream rather than in the state: a heartbeat
/// that follows no report is answered by the stream's reader, without a turn of the actor, a
/// snapshot or a write. Once the master gives the stream up (silence past the timeout, or the
/// stream ended) no heartbeat is recorded or answered on it any more, so a worker's lease can
/// never run past the moment the master counted from when it declared the worker lost.
#[derive(Debug)]
pub struct Heard(Mutex<HeardAt>);

#[derive(Debug, Clone, Copy)]
struct HeardAt {
    at: tokio::time::Instant,
    at_ms: i64,
    given_up: bool,
    /// The last heartbeat the actor answered, after its turn's commit.
    answered_after_commit: u64,
    /// The longest heartbeat interval the worker was told on this stream: it is held to four
    /// times that, or the master's timeout if longer.
    told_interval_ms: u64,
}

impl HeardAt {
    /// The silence the stream is held to: the master's `timeout`, or four times the longest
    /// interval its worker was told, if longer.
    fn held_to(&self, timeout: Duration) -> Duration {
        timeout.max(Duration::from_millis(
            self.told_interval_ms.saturating_mul(4),
        ))
    }
}

impl Heard {
    pub fn new(at: tokio::time::Instant, at_ms: i64) -> Self {
        Self(Mutex::new(HeardAt {
            at,
            at_ms,
            given_up: false,
            answered_after_commit: 0,
            told_interval_ms: 0,
        }))
    }

    /// The actor answered heartbeat `seq` after its turn's commit.
    pub fn answered_after_commit(&self, seq: u64) {
        let mut heard = self.lock();
        heard.answered_after_commit = heard.answered_after_commit.max(seq);
    }

    /// Whether heartbeat `seq` has been answered by the actor.
    pub fn committed_through(&self, seq: u64) -> bool {
        self.lock().answered_after_commit >= seq
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HeardAt> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a heartbeat; false once the master has given the stream up.
    pub fn beat(&self, at: tokio::time::Instant, at_ms: i64) -> bool {
        let mut heard = self.lock();
        if heard.given_up {
            return false;
        }
        heard.at = heard.at.max(at);
        heard.at_ms = heard.at_ms.max(at_ms);
        true
    }

    /// The worker was told to heartbeat every `interval_ms` (at registration).
    pub fn told(&self, interval_ms: u64) {
        let mut heard = self.lock();
        heard.told_interval_ms = heard.told_interval_ms.max(interval_ms);
    }

    /// The answer to heartbeat `seq`, telling the worker to heartbeat every `wanted_ms` when
    /// that is longer than it was told: the interval on a stream only grows, so the timeout
    /// the worker is held to never shrinks below what its rhythm needs.
    pub fn ack(&self, seq: u64, wanted_ms: u64) -> MasterMessage {
        let mut heard = self.lock();
        let heartbeat_interval_ms = if wanted_ms > heard.told_interval_ms {
            heard.told_interval_ms = wanted_ms;
            wanted_ms
        } else {
            0
        };
        MasterMessage {
            msg: Some(Msg::HeartbeatAck(HeartbeatAck {
                seq,
                heartbeat_interval_ms,
            })),
            epoch: 0,
        }
    }

    /// When the worker was last heard (milliseconds since the epoch).
    pub fn last_ms(&self) -> i64 {
        self.lock().at_ms
    }

    /// Gives the stream up if nothing was heard on it, nor at `seen` (what the state recorded),
    /// within `timeout` before `now`; then returns when the worker was last heard.
    fn give_up_if_silent(
        &self,
        seen: tokio::time::Instant,
        now: tokio::time::Instant,
        timeout: Duration,
    ) -> Option<tokio::time::Instant> {
        let mut heard = self.lock();
        let last = heard.at.max(seen);
        let timeout = heard.held_to(timeout);
        if now.saturating_duration_since(last) <= timeout {
            return None;
        }
        heard.given_up = true;
        Some(last)
    }

    /// Whether the stream was heard within `timeout` (or four times the interval its worker
    /// was told, if longer) before `now`.
    /// The last instant the stream counts as heard in time: heartbeats and longer intervals
    /// only move it later.
    fn heard_until(&self, timeout: Duration) -> tokio::time::Instant {
        let heard = self.lock();
        heard.at + heard.held_to(timeout)
    }

    /// Gives the stream up; returns when the worker was last heard on it.
    fn give_up(&self) -> (tokio::time::Instant, i64) {
        let mut heard = self.lock();
        heard.given_up = true;
        (heard.at, heard.at_ms)
    }
}

impl Link {
    pub fn new(
        worker_id: String,
        conn_id: u64,
        orders: mpsc::Sender<Box<MasterMessage>>,
        pending_logs: PendingLogs,
    ) -> Self {
        Self {
            worker_id,
            conn_id,
            orders,
            closed: tokio_util::sync::CancellationToken::new(),
            pending_logs,
            log_reads: Arc::new(tokio::sync::Semaphore::new(LOG_READS_IN_FLIGHT)),
            tunnels: Arc::new(tokio::sync::Semaphore::new(TUNNELS_PER_WORKER)),
            heard: Arc::new(Heard::new(
                tokio::time::Instant::now(),
                hearth_common::ids::now_ms(),
            )),
        }
    }

    /// Queues `message` without waiting. A full queue closes the stream: the worker is stuck,
    /// and its reader then reports it disconnected, so the master stops counting on it.
    pub fn send(&self, message: MasterMessage) -> bool {
        match self.orders.try_send(Box::new(message)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::error!(worker_id = %self.worker_id, conn_id = self.conn_id,
                    queued = ORDER_QUEUE, "worker is not reading its orders; closing its stream");
                self.closed.cancel();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Links {
    inner: Arc<Mutex<HashMap<String, Link>>>,
    next_request: Arc<AtomicU64>,
    /// How often the workers are asked to heartbeat now (milliseconds), for the size of the
    /// cluster: set by the actor, read by each stream as it answers a heartbeat.
    heartbeat_interval_ms: Arc<AtomicU64>,
    /// Before this instant every stream is heard in time, as the last pass over them found;
    /// a new stream clears it. Locked after the map, and written only with the map locked, so
    /// a pass never writes over the clearing of a stream installed during it.
    heard_until: Arc<Mutex<Option<tokio::time::Instant>>>,
}

/// How long a worker has to answer a log request.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

/// A value behind a lock only ever replaced whole is good to use after a panic elsewhere.
fn lock_ignoring_poison<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        // A panic while holding this lock cannot leave the map half-changed (single inserts and
        // removes), so a poisoned lock is still good to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn install(&self, link: Link) {
        let mut map = self.lock();
        map.insert(link.worker_id.clone(), link);
        *lock_ignoring_poison(&self.heard_until) = None;
    }

    /// Sets how often workers are asked to heartbeat now.
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        self.heartbeat_interval_ms
            .store(interval.as_millis() as u64, Ordering::Relaxed);
    }

    /// How often workers are asked to heartbeat now (milliseconds; 0 before it is first set).
    pub fn heartbeat_interval_ms(&self) -> u64 {
        self.heartbeat_interval_ms.load(Ordering::Relaxed)
    }

    /// Removes the link if it is still the one on `conn_id`, and ends its stream; returns when
    /// the worker was last heard on it.
    pub fn remove(&self, worker_id: &str, conn_id: u64) -> Option<(tokio::time::Instant, i64)> {
        let mut map = self.lock();
        if map.get(worker_id).is_some_and(|l| l.conn_id == conn_id)
            && let Some(link) = map.remove(worker_id)
        {
            link.closed.cancel();
            return Some(link.heard.give_up());
        }
        None
    }

    /// For the state's expiry: whether the worker on `conn_id`, last seen by the state at
    /// `seen`, has been silent past `timeout`; if so its stream is given up and the answer is
    /// when it was last heard.
    pub fn give_up_if_silent(
        &self,
        worker_id: &str,
        conn_id: u64,
        seen: tokio::time::Instant,
        now: tokio::time::Instant,
        timeout: Duration,
    ) -> Option<tokio::time::Instant> {
        let heard = self
            .lock()
            .get(worker_id)
            .filter(|l| l.conn_id == conn_id)
            .map(|l| l.heard.clone());
        match heard {
            Some(heard) => heard.give_up_if_silent(seen, now, timeout),
            None => (now.saturating_duration_since(seen) > timeout).then_some(seen),
        }
    }

    /// Whether every stream was heard within its timeout before `now`: then the expiry need
    /// not look at the workers one by one. The pass over the streams that answers it also finds
    /// the first moment one could fall silent, and is not made again before then: with 10,000
    /// workers heartbeating every 10 s and held to 40 s, once in some 30 s instead of every
    /// tick.
    pub fn all_heard_within(&self, now: tokio::time::Instant, timeout: Duration) -> bool {
        if lock_ignoring_poison(&self.heard_until).is_some_and(|until| now < until) {
            return true;
        }
        let map = self.lock();
        let mut first = None::<tokio::time::Instant>;
        for link in map.values() {
            let until = link.heard.heard_until(timeout);
            if now > until {
                return false;
            }
            first = Some(first.map_or(until, |f| f.min(until)));
        }
        *lock_ignoring_poison(&self.heard_until) = first;
        true
    }

    /// When the worker was last heard: what its stream heard, or what the state recorded.
    pub fn last_heartbeat_ms(&self, worker: &crate::state::WorkerInfo) -> i64 {
        let on_stream = self
            .lock()
            .get(&worker.id)
            .filter(|l| l.conn_id == worker.conn_id)
            .map(|l| l.heard.last_ms());
        on_stream.unwrap_or(0).max(worker.last_heartbeat_ms)
    }

    /// Ends every worker stream (the master is stopping).
    pub fn clear(&self) {
        for (_, link) in self.lock().drain() {
            link.closed.cancel();
        }
    }

    pub fn send(&self, worker_id: &str, message: MasterMessage) -> bool {
        // Cloned so the lock is not held while the queue is tried.
        let link = self.lock().get(worker_id).cloned();
        link.is_some_and(|l| l.send(message))
    }

    pub fn get(&self, worker_id: &str) -> Option<Link> {
        self.lock().get(worker_id).cloned()
    }

    pub fn connected(&self) -> usize {
        self.lock().len()
    }

    /// Asks a worker for a piece of a driver's or executor's log and waits for the answer.
    pub async fn read_log(
        &self,
        worker_id: &str,
        process: &ProcessRef,
        stream: LogStream,
        offset: i64,
        max_bytes: u32,
    ) -> Result<LogData> {
        let link = self.lock().get(worker_id).cloned().ok_or_else(|| {
            Error::Unavailable(format!(
                "the logs of {process} are on {worker_id}, which is not connected"
            ))
        })?;
        let Ok(_permit) = link.log_reads.clone().try_acquire_owned() else {
            return Err(Error::Unavailable(format!(
                "{worker_id} is answering {LOG_READS_IN_FLIGHT} log reads already; try again"
            )));
        };
        let request_id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        link.pending_logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request_id, tx);
        let order = MasterMessage {
            msg: Some(Msg::ReadLog(ReadLogChunk {
                request_id,
                process: process.to_string(),
                stream: stream as i32,
                offset,
                max_bytes,
            })),
            epoch: 0,
        };
        let unavailable = || {
            Error::Unavailable(format!(
                "{worker_id} went away while reading the logs of {process}"
            ))
        };
        // Not `Link::send`: a full queue refuses this read but does not cut the worker off.
        if link.orders.try_send(Box::new(order)).is_err() {
            link.pending_logs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&request_id);
            return Err(unavailable());
        }
        let answer = tokio::time::timeout(LOG_TIMEOUT, rx).await;
        link.pending_logs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&request_id);
        match answer {
            Ok(Ok(data)) if data.error.is_empty() => Ok(data),
            Ok(Ok(data)) => Err(Error::Unavailable(format!(
                "{worker_id} cannot read the log of {process}: {}",
                data.error
            ))),
            Ok(Err(_)) => Err(unavailable()),
            Err(_) => Err(Error::Unavailable(format!(
                "{worker_id} did not answer a log request for {process} within {} s",
                LOG_TIMEOUT.as_secs()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn link(worker_id: &str, conn_id: u64) -> (Link, mpsc::Receiver<Box<MasterMessage>>) {
        let (tx, rx) = mpsc::channel(8);
        (
            Link::new(worker_id.into(), conn_id, tx, Default::default()),
            rx,
        )
    }

    /// A worker told a longer interval is held to four times it: the answer carries the new
    /// interval once, the interval never shrinks on a stream, and the expiry waits for it.
    #[tokio::test(start_paused = true)]
    async fn a_longer_interval_is_told_once_and_lengthens_the_timeout() {
        let links = Links::default();
        let (l, _rx) = link("w", 7);
        let heard = l.heard.clone();
        links.install(l);
        heard.told(2_500);
        let told = |m: MasterMessage| match m.msg {
            Some(Msg::HeartbeatAck(a)) => a.heartbeat_interval_ms,
            other => panic!("{other:?}"),
        };
        assert_eq!(told(heard.ack(1, 2_500)), 0);
        assert_eq!(told(heard.ack(2, 10_000)), 10_000);
        assert_eq!(told(heard.ack(3, 10_000)), 0);
        assert_eq!(told(heard.ack(4, 5_000)), 0, "never shorter on a stream");
        let seen = Instant::now();
        let timeout = Duration::from_secs(10);
        tokio::time::advance(Duration::from_secs(39)).await;
        assert!(links.all_heard_within(Instant::now(), timeout));
        assert_eq!(
            links.give_up_if_silent("w", 7, seen, Instant::now(), timeout),
            None
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!links.all_heard_within(Instant::now(), timeout));
        assert!(
            links
                .give_up_if_silent("w", 7, seen, Instant::now(), timeout)
                .is_some()
        );
    }

    /// The pass over the streams is not made again before one could fall silent, but a stream
    /// installed after it is held to the master's own timeout from then on.
    #[tokio::test(start_paused = true)]
    async fn a_stream_installed_after_a_pass_is_looked_at_by_the_next() {
        let links = Links::default();
        let timeout = Duration::from_secs(10);
        let (old, _old_rx) = link("old", 1);
        let old_heard = old.heard.clone();
        links.install(old);
        old_heard.told(10_000);
        assert!(links.all_heard_within(Instant::now(), timeout));
        tokio::time::advance(Duration::from_secs(5)).await;
        let (new, _new_rx) = link("new", 2);
        links.install(new);
        tokio::time::advance(Duration::from_secs(9)).await;
        assert!(links.all_heard_within(Instant::now(), timeout));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(
            !links.all_heard_within(Instant::now(), timeout),
            "the new stream, silent for 11 s, is past the 10 s timeout"
        );
        assert!(links.remove("new", 2).is_some());
        assert!(links.all_heard_within(Instant::now(), timeout));
        tokio::time::advance(Duration::from_secs(25)).await;
        assert!(
            !links.all_heard_within(Instant::now(), timeout),
            "the old stream, silent for 41 s, is past four of its 10 s intervals"
        );
    }

    /// A heartbeat recorded beside the stream keeps the worker alive for the expiry; once the
    /// expiry gives the stream up, no later heartbeat is recorded (so none is answered), and the
    /// time the expiry reports is the last one recorded.
    #[tokio::test(start_paused = true)]
    async fn a_stream_given_up_records_no_more_heartbeats() {
        let links = Links::default();
        let (l, _rx) = link("w", 7);
        let heard = l.heard.clone();
        links.install(l);
        let registered = Instant::now();
        let timeout = Duration::from_secs(10);

        tokio::time::advance(Duration::from_secs(8)).await;
        let beat = Instant::now();
        let beat_ms = hearth_common::ids::now_ms() + 8_000;
        assert!(heard.beat(beat, beat_ms));
        tokio::time::advance(Duration::from_secs(8)).await;
        // The state saw the worker at registration only; the stream heard it 8 s ago.
        assert_eq!(
            links.give_up_if_silent("w", 7, registered, Instant::now(), timeout),
            None
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            links.give_up_if_silent("w", 7, registered, Instant::now(), timeout),
            Some(beat)
        );
        assert!(
            !heard.beat(Instant::now(), beat_ms + 11_000),
            "given up: not recorded"
        );
        assert_eq!(heard.last_ms(), beat_ms);
    }

    /// A stream's end gives it up too, and tells when the worker was last heard on it; a stale
    /// connection id changes nothing.
    #[tokio::test(start_paused = true)]
    async fn removing_a_stream_gives_it_up() {
        let links = Links::default();
        let (l, _rx) = link("w", 7);
        let heard = l.heard.clone();
        links.install(l);
        let at = Instant::now();
        let at_ms = hearth_common::ids::now_ms() + 1;
        assert!(heard.beat(at, at_ms));
        assert_eq!(links.remove("w", 6), None);
        assert_eq!(links.remove("w", 7), Some((at, at_ms)));
        assert!(!heard.beat(Instant::now(), at_ms + 1));
    }
}
