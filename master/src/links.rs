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
    proto::{LogData, LogStream, MasterMessage, ReadLogChunk, master_message::Msg},
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
    /// Orders to the worker, bounded by [`ORDER_QUEUE`].
    pub orders: mpsc::Sender<MasterMessage>,
    /// Ends the stream in both directions at once, even while the worker is not reading.
    pub closed: tokio_util::sync::CancellationToken,
    /// Filled by the stream's reader task when `LogData` arrives.
    pub pending_logs: PendingLogs,
    pub log_reads: Arc<tokio::sync::Semaphore>,
    /// Driver UI tunnels open through this worker, at most [`TUNNELS_PER_WORKER`].
    pub tunnels: Arc<tokio::sync::Semaphore>,
}

impl Link {
    pub fn new(
        worker_id: String,
        conn_id: u64,
        orders: mpsc::Sender<MasterMessage>,
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
        }
    }

    /// Queues `message` without waiting. A full queue closes the stream: the worker is stuck,
    /// and its reader then reports it disconnected, so the master stops counting on it.
    pub fn send(&self, message: MasterMessage) -> bool {
        match self.orders.try_send(message) {
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
}

/// How long a worker has to answer a log request.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);

impl Links {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Link>> {
        // A panic while holding this lock cannot leave the map half-changed (single inserts and
        // removes), so a poisoned lock is still good to use.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn install(&self, link: Link) {
        self.lock().insert(link.worker_id.clone(), link);
    }

    /// Removes the link if it is still the one on `conn_id`, and ends its stream.
    pub fn remove(&self, worker_id: &str, conn_id: u64) {
        let mut map = self.lock();
        if map.get(worker_id).is_some_and(|l| l.conn_id == conn_id) {
            if let Some(link) = map.remove(worker_id) {
                link.closed.cancel();
            }
        }
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
        };
        let unavailable = || {
            Error::Unavailable(format!(
                "{worker_id} went away while reading the logs of {process}"
            ))
        };
        // Not `Link::send`: a full queue refuses this read but does not cut the worker off.
        if link.orders.try_send(order).is_err() {
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
