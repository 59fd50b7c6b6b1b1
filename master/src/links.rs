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

/// One worker's open stream.
#[derive(Debug, Clone)]
pub struct Link {
    pub worker_id: String,
    pub conn_id: u64,
    /// Orders to the worker; the stream to it ends when the last sender is dropped.
    pub orders: mpsc::UnboundedSender<MasterMessage>,
    /// Filled by the stream's reader task when `LogData` arrives.
    pub pending_logs: PendingLogs,
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

    /// Removes the link if it is still the one on `conn_id`; dropping it ends the stream.
    pub fn remove(&self, worker_id: &str, conn_id: u64) {
        let mut map = self.lock();
        if map.get(worker_id).is_some_and(|l| l.conn_id == conn_id) {
            map.remove(worker_id);
        }
    }

    /// Drops every link, which ends every worker stream (the master is stopping).
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn send(&self, worker_id: &str, message: MasterMessage) -> bool {
        match self.lock().get(worker_id) {
            Some(link) => link.orders.send(message).is_ok(),
            None => false,
        }
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
        if link.orders.send(order).is_err() {
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
