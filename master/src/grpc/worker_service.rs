//! `WorkerService`: one long-lived stream per worker, turned into actor commands.

use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use hearth_common::{
    proto::{
        MasterMessage, TunnelData, WorkerMessage, worker_message::Msg,
        worker_service_server::WorkerService,
    },
    spec::validate_register,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{actor::MasterHandle, command::Command, error::Error, links::Link, tunnels::Opened};

/// How long a new stream may take to send its `Register`.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

#[derive(Debug, Clone)]
pub struct WorkerApi {
    master: MasterHandle,
}

impl WorkerApi {
    pub fn new(master: MasterHandle) -> Self {
        Self { master }
    }
}

type OrderStream = Pin<Box<dyn Stream<Item = Result<MasterMessage, Status>> + Send>>;
type TunnelStream = Pin<Box<dyn Stream<Item = Result<TunnelData, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type SessionStream = OrderStream;
    type TunnelStream = TunnelStream;

    async fn tunnel(
        &self,
        request: Request<Streaming<TunnelData>>,
    ) -> Result<Response<Self::TunnelStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no first message within 10 s"))??
            .ok_or_else(|| Status::invalid_argument("tunnel: closed before its first message"))?;
        let (outbound, rx) = mpsc::channel(4);
        let opened = Opened {
            error: first.error,
            inbound,
            outbound,
        };
        if !self.master.tunnels.arrived(first.tunnel_id, opened) {
            return Err(Status::not_found(format!(
                "tunnel_id: no tunnel {} is waiting (it timed out, or was never asked for)",
                first.tunnel_id
            )));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn session(
        &self,
        request: Request<Streaming<WorkerMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let peer_host = request
            .remote_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no Register within 10 s of opening the stream")
            })??;
        let Some(WorkerMessage {
            msg: Some(Msg::Register(register)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "register: the first message on a worker stream must be Register",
            ));
        };
        validate_register(&register).map_err(Error::from)?;

        let worker_id = register.worker_id.clone();
        let conn_id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
        let (orders, orders_rx) = mpsc::channel(crate::links::order_queue(register.cores));
        let pending_logs = Arc::new(Mutex::new(HashMap::new()));
        let link = Link::new(worker_id.clone(), conn_id, orders, pending_logs.clone());
        let closed = link.closed.clone();
        let stream_link = link.clone();
        self.master
            .ask(|reply| Command::Register {
                register,
                peer_host,
                link,
                reply,
            })
            .await?;

        let master = self.master.clone();
        let reader_closed = closed.clone();
        tokio::spawn(async move {
            let reason = tokio::select! {
                reason = read_worker_stream(&master, &stream_link, inbound, pending_logs) => reason,
                _ = reader_closed.cancelled() => "closed by the master".to_string(),
            };
            tracing::info!(worker_id, conn_id, reason, "worker stream ended");
            let disconnected = Command::Disconnected {
                worker_id,
                conn_id,
                reason,
            };
            let _ = forward(&master, disconnected).await;
        });

        // Ends when the link is closed (disconnect, timeout, a stuck worker, the master stopping)
        // without waiting for queued orders to drain, or when the last sender is dropped.
        // Every message carries the term; none leaves once the term is over.
        let leadership = self.master.leadership.clone();
        let stream = futures_util::StreamExt::take_until(
            ReceiverStream::new(orders_rx),
            closed.cancelled_owned(),
        )
        .map_while(move |mut message| {
            if !leadership.acting() {
                return None;
            }
            message.epoch = leadership.epoch;
            Some(Ok(*message))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Forwards what a worker sends until its stream ends; returns why it ended.
///
/// A heartbeat is recorded here, and answered here when it asks for an answer and nothing the
/// worker reported since the last answer is still on its way through the actor: it changes
/// nothing kept, so it needs no turn, snapshot or write, and the master's work for a
/// heartbeating cluster stays flat as it grows. One that follows a report goes through the
/// actor and is answered after the turn's commit, as the worker may forget what it reported
/// once answered.
async fn read_worker_stream(
    master: &MasterHandle,
    link: &Link,
    mut inbound: Streaming<WorkerMessage>,
    pending_logs: crate::links::PendingLogs,
) -> String {
    let (worker_id, conn_id) = (link.worker_id.as_str(), link.conn_id);
    // Whether a report went to the actor since the last heartbeat sent there, and that
    // heartbeat's number: until the actor has answered it, later ones go the same way.
    let (mut reported, mut through_actor) = (false, 0);
    // Made once: a wait made per message would join and leave the token's list of waiters,
    // shared by every stream, with each heartbeat.
    let shutdown = master.shutdown.cancelled();
    tokio::pin!(shutdown);
    loop {
        let next = tokio::select! {
            _ = &mut shutdown => return "master shutting down".into(),
            next = inbound.message() => next,
        };
        let message = match next {
            Ok(Some(WorkerMessage { msg: Some(m) })) => m,
            Ok(Some(WorkerMessage { msg: None })) => continue,
            Ok(None) => return "stream closed by the worker".into(),
            Err(status) => return format!("stream broken: {}", status.message()),
        };
        let command = match message {
            // One that asks for no answer (seq 0) only says the worker is alive, whatever is
            // in flight.
            Msg::Heartbeat(beat)
                if beat.seq == 0 || (!reported && link.heard.committed_through(through_actor)) =>
            {
                if link
                    .heard
                    .beat(tokio::time::Instant::now(), hearth_common::ids::now_ms())
                    && beat.seq > 0
                {
                    link.send(
                        link.heard
                            .ack(beat.seq, master.links.heartbeat_interval_ms()),
                    );
                }
                continue;
            }
            Msg::Heartbeat(beat) => {
                reported = false;
                through_actor = beat.seq;
                Command::Heartbeat {
                    worker_id: worker_id.to_string(),
                    conn_id,
                    seq: beat.seq,
                }
            }
            Msg::DriverStatus(status) => {
                reported = true;
                Command::DriverStatus {
                    worker_id: worker_id.to_string(),
                    conn_id,
                    status,
                }
            }
            Msg::ExecutorStatus(status) => {
                reported = true;
                Command::ExecutorStatus {
                    worker_id: worker_id.to_string(),
                    conn_id,
                    status,
                }
            }
            Msg::LogData(data) => {
                let waiter = pending_logs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&data.request_id);
                if let Some(tx) = waiter {
                    let _ = tx.send(data);
                }
                continue;
            }
            Msg::Decommission(d) => {
                reported = true;
                Command::Decommission {
                    worker_id: worker_id.to_string(),
                    conn_id,
                    reason: d.reason,
                }
            }
            Msg::LogTail(tail) => {
                if ran_there(&master.snapshot(), worker_id, &tail.process) {
                    master.kept_logs.ship(worker_id, tail);
                } else {
                    tracing::warn!(worker_id, process = %tail.process,
                        "shipped log of a process that never ran on this worker ignored");
                }
                continue;
            }
            Msg::Register(_) => return "protocol error: a second Register on one stream".into(),
        };
        if forward(master, command).await.is_err() {
            return "master shutting down".into();
        }
    }
}

/// Sends `command` to the actor in a future of its own on the heap. A worker's stream task
/// lives as long as the worker and mostly waits for its next message: holding a command-sized
/// send in its own state made each such task 3 KiB, 30 MiB at 10,000 workers.
fn forward(
    master: &MasterHandle,
    command: Command,
) -> Pin<Box<dyn Future<Output = crate::error::Result<()>> + Send + '_>> {
    Box::pin(master.send(command))
}

/// Whether `process` ran (any attempt) on `worker_id`: a worker keeps logs only of its own.
fn ran_there(state: &crate::state::State, worker_id: &str, process: &str) -> bool {
    use hearth_common::ids::ProcessRef;
    match ProcessRef::parse("process", process) {
        Ok(ProcessRef::Driver(id)) => state.drivers.get(&id).is_some_and(|d| {
            d.worker_id.as_deref() == Some(worker_id)
                || d.history.iter().any(|h| h.worker_id == worker_id)
        }),
        Ok(ProcessRef::Executor {
            app_id,
            executor_id,
        }) => state
            .apps
            .get(&app_id)
            .and_then(|a| a.executors.get(&executor_id))
            .is_some_and(|e| e.worker_id == worker_id),
        Err(_) => false,
    }
}
