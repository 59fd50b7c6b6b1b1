//! `ClientService`: submissions, queries, kills, watches and logs. Reads come from the latest
//! snapshot; changes go to the actor.

use std::{pin::Pin, sync::Arc, time::Duration};

use hearth_common::{
    ids::{IdKind, ProcessRef, check_id},
    proto::{self, Application, Driver, LogChunk, LogStream, client_service_server::ClientService},
    spec::{validate_app_spec, validate_driver_spec, validate_name},
    state_names::StateName,
};
use tokio::sync::mpsc;
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

use super::access::caller_of;
use crate::{actor::MasterHandle, command::Command, error::Error, state::State};

/// Bytes asked of a worker per log request.
const LOG_CHUNK: u32 = 256 * 1024;
/// How often a followed log is polled when nothing new arrived.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct ClientApi {
    master: MasterHandle,
}

impl ClientApi {
    pub fn new(master: MasterHandle) -> Self {
        Self { master }
    }
}

fn driver_proto(state: &State, id: &str) -> Result<Driver, Error> {
    check_id("driver_id", id, IdKind::Driver)?;
    state.driver_proto(id)
}

fn app_proto(state: &State, id: &str) -> Result<Application, Error> {
    check_id("app_id", id, IdKind::App)?;
    Ok(state.app(id)?.to_proto())
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl ClientService for ClientApi {
    async fn submit_driver(
        &self,
        request: Request<proto::SubmitDriverRequest>,
    ) -> Result<Response<proto::SubmitDriverResponse>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        validate_driver_spec(&spec).map_err(Error::from)?;
        caller.may_submit(&spec.queue)?;
        let application = request.application;
        if let Some(app) = &application {
            validate_app_spec(app).map_err(Error::from)?;
        }
        let submission_id = if request.submission_id.is_empty() {
            None
        } else {
            hearth_common::spec::validate_submission_id(&request.submission_id)
                .map_err(Error::from)?;
            Some(request.submission_id)
        };
        let driver_id = self
            .master
            .ask(|reply| Command::Submit {
                spec,
                application,
                submission_id,
                owner: caller.owner(),
                reply,
            })
            .await?;
        Ok(Response::new(proto::SubmitDriverResponse { driver_id }))
    }

    async fn get_driver(
        &self,
        request: Request<proto::GetDriverRequest>,
    ) -> Result<Response<Driver>, Status> {
        let caller = caller_of(&request)?;
        let id = request.into_inner().driver_id;
        let state = self.master.snapshot();
        caller.may_see_driver(&state, &id)?;
        if state.drivers.contains_key(&id) {
            return Ok(Response::new(driver_proto(&state, &id)?));
        }
        check_id("driver_id", &id, IdKind::Driver).map_err(Error::from)?;
        Ok(Response::new(
            self.master.find_driver(&id).await?.to_proto(),
        ))
    }

    async fn list_drivers(
        &self,
        request: Request<proto::ListDriversRequest>,
    ) -> Result<Response<proto::ListDriversResponse>, Status> {
        caller_of(&request)?.may_list()?;
        let request = request.into_inner();
        if request.page_size == 0 {
            let state = self.master.snapshot();
            let drivers = state.drivers_proto();
            return Ok(Response::new(proto::ListDriversResponse {
                drivers,
                next_page_token: String::new(),
            }));
        }
        let master = self.master.clone();
        let page = tokio::task::spawn_blocking(move || {
            crate::history::page(&master, request.page_size, &request.page_token)
        })
        .await
        .map_err(|e| Status::internal(format!("listing drivers: {e}")))??;
        Ok(Response::new(page))
    }

    async fn list_workers(
        &self,
        request: Request<proto::ListWorkersRequest>,
    ) -> Result<Response<proto::ListWorkersResponse>, Status> {
        caller_of(&request)?.may_list()?;
        let state = self.master.snapshot();
        let workers = state.workers.values().map(|w| w.to_proto()).collect();
        Ok(Response::new(proto::ListWorkersResponse { workers }))
    }

    async fn list_queues(
        &self,
        request: Request<proto::ListQueuesRequest>,
    ) -> Result<Response<proto::ListQueuesResponse>, Status> {
        caller_of(&request)?.may_list()?;
        let state = self.master.snapshot();
        Ok(Response::new(proto::ListQueuesResponse {
            queues: state.queue_views(),
            config_error: state.queues_refused.clone().unwrap_or_default(),
        }))
    }

    async fn kill_driver(
        &self,
        request: Request<proto::KillDriverRequest>,
    ) -> Result<Response<proto::KillDriverResponse>, Status> {
        let caller = caller_of(&request)?;
        let driver_id = request.into_inner().driver_id;
        check_id("driver_id", &driver_id, IdKind::Driver).map_err(Error::from)?;
        caller.may_kill_driver(&self.master.snapshot(), &driver_id)?;
        let state = self
            .master
            .ask(|reply| Command::Kill { driver_id, reply })
            .await?;
        Ok(Response::new(proto::KillDriverResponse {
            state: state as i32,
        }))
    }

    type WatchDriverStream = BoxStream<Driver>;

    async fn watch_driver(
        &self,
        request: Request<proto::WatchDriverRequest>,
    ) -> Result<Response<Self::WatchDriverStream>, Status> {
        let caller = caller_of(&request)?;
        let id = request.into_inner().driver_id;
        caller.may_see_driver(&self.master.snapshot(), &id)?;
        let mut snapshots = self.master.subscribe();
        let first = driver_proto(&snapshots.borrow_and_update(), &id)?;
        let (tx, rx) = mpsc::channel(16);
        let shutdown = self.master.shutdown.clone();
        tokio::spawn(async move {
            let mut last = first;
            if !send(&tx, Ok(last.clone()), &shutdown).await {
                return;
            }
            while !hearth_common::state_names::driver_state(last.state).is_terminal() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tx.closed() => return,
                    changed = snapshots.changed() => if changed.is_err() { return },
                }
                let next = driver_proto(&snapshots.borrow_and_update(), &id);
                let next = match next {
                    Ok(d) => d,
                    Err(e) => {
                        send(&tx, Err(e.into()), &shutdown).await;
                        return;
                    }
                };
                if next != last {
                    last = next;
                    if !send(&tx, Ok(last.clone()), &shutdown).await {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn register_application(
        &self,
        request: Request<proto::RegisterApplicationRequest>,
    ) -> Result<Response<Application>, Status> {
        let caller = caller_of(&request)?;
        let request = request.into_inner();
        let spec = request
            .spec
            .ok_or_else(|| Status::invalid_argument("spec: missing"))?;
        validate_app_spec(&spec).map_err(Error::from)?;
        caller.may_register_app(
            &self.master.snapshot(),
            (!request.driver_id.is_empty()).then_some(request.driver_id.as_str()),
            &spec.queue,
        )?;
        let driver = if request.driver_id.is_empty() {
            None
        } else {
            check_id("driver_id", &request.driver_id, IdKind::Driver).map_err(Error::from)?;
            Some((
                request.driver_id,
                caller.attempt_for(request.driver_attempt),
            ))
        };
        validate_name("driver_host", &request.driver_host).map_err(Error::from)?;
        let driver_host = request.driver_host;
        let app_id = self
            .master
            .ask(|reply| Command::RegisterApp {
                spec,
                driver,
                driver_host,
                owner: caller.owner(),
                reply,
            })
            .await?;
        Ok(Response::new(app_proto(&self.master.snapshot(), &app_id)?))
    }

    async fn request_executors(
        &self,
        request: Request<proto::RequestExecutorsRequest>,
    ) -> Result<Response<Application>, Status> {
        let caller = caller_of(&request)?;
        let proto::RequestExecutorsRequest { app_id, count } = request.into_inner();
        check_id("app_id", &app_id, IdKind::App).map_err(Error::from)?;
        caller.may_act_on_app(&self.master.snapshot(), &app_id)?;
        let id = app_id.clone();
        self.master
            .ask(|reply| Command::RequestExecutors {
                app_id: id,
                count,
                reply,
            })
            .await?;
        Ok(Response::new(app_proto(&self.master.snapshot(), &app_id)?))
    }

    async fn kill_executors(
        &self,
        request: Request<proto::KillExecutorsRequest>,
    ) -> Result<Response<Application>, Status> {
        let caller = caller_of(&request)?;
        let proto::KillExecutorsRequest {
            app_id,
            executor_ids,
        } = request.into_inner();
        check_id("app_id", &app_id, IdKind::App).map_err(Error::from)?;
        caller.may_act_on_app(&self.master.snapshot(), &app_id)?;
        let id = app_id.clone();
        self.master
            .ask(|reply| Command::KillExecutors {
                app_id: id,
                executor_ids,
                reply,
            })
            .await?;
        Ok(Response::new(app_proto(&self.master.snapshot(), &app_id)?))
    }

    async fn unregister_application(
        &self,
        request: Request<proto::UnregisterApplicationRequest>,
    ) -> Result<Response<Application>, Status> {
        let caller = caller_of(&request)?;
        let app_id = request.into_inner().app_id;
        check_id("app_id", &app_id, IdKind::App).map_err(Error::from)?;
        caller.may_act_on_app(&self.master.snapshot(), &app_id)?;
        let id = app_id.clone();
        self.master
            .ask(|reply| Command::UnregisterApp { app_id: id, reply })
            .await?;
        Ok(Response::new(app_proto(&self.master.snapshot(), &app_id)?))
    }

    async fn get_application(
        &self,
        request: Request<proto::GetApplicationRequest>,
    ) -> Result<Response<Application>, Status> {
        let caller = caller_of(&request)?;
        let app_id = request.into_inner().app_id;
        let state = self.master.snapshot();
        caller.may_see_app(&state, &app_id)?;
        Ok(Response::new(app_proto(&state, &app_id)?))
    }

    async fn list_applications(
        &self,
        request: Request<proto::ListApplicationsRequest>,
    ) -> Result<Response<proto::ListApplicationsResponse>, Status> {
        caller_of(&request)?.may_list()?;
        let state = self.master.snapshot();
        let applications = state.apps.values().map(|a| a.to_proto()).collect();
        Ok(Response::new(proto::ListApplicationsResponse {
            applications,
        }))
    }

    async fn kill_application(
        &self,
        request: Request<proto::KillApplicationRequest>,
    ) -> Result<Response<Application>, Status> {
        let caller = caller_of(&request)?;
        let app_id = request.into_inner().app_id;
        check_id("app_id", &app_id, IdKind::App).map_err(Error::from)?;
        caller.may_act_on_app(&self.master.snapshot(), &app_id)?;
        let id = app_id.clone();
        self.master
            .ask(|reply| Command::KillApp { app_id: id, reply })
            .await?;
        Ok(Response::new(app_proto(&self.master.snapshot(), &app_id)?))
    }

    type ReadLogStream = BoxStream<LogChunk>;

    async fn read_log(
        &self,
        request: Request<proto::ReadLogRequest>,
    ) -> Result<Response<Self::ReadLogStream>, Status> {
        let caller = caller_of(&request)?;
        let req = request.into_inner();
        let stream = LogStream::try_from(req.stream)
            .map_err(|_| Status::invalid_argument("stream: must be STDOUT or STDERR"))?;
        let process = ProcessRef::parse("id", &req.id).map_err(Error::from)?;
        let snapshot = self.master.snapshot();
        caller.may_read_log(&snapshot, &process)?;
        let (worker_id, ended) = snapshot.log_source(&process)?;
        let kept = self.master.kept_logs.holds(&process, stream);
        if worker_id.is_none() && !kept && (!req.follow || ended) {
            let d = snapshot.driver(&req.id)?;
            return Err(Status::failed_precondition(format!(
                "{} has no logs yet: it is {} and not on a worker{}",
                d.id,
                d.state.name(),
                d.waiting_reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let master = self.master.clone();
        tokio::spawn(async move {
            let result = copy_log(&master, &process, stream, req.offset, req.follow, &tx).await;
            if let Err(e) = result {
                let _ = tx.send(Err(e.into())).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Streams a process's log from its worker to `tx`; with `follow`, until it ends. When a
/// supervised driver is relaunched on another worker, following moves there.
async fn copy_log(
    master: &MasterHandle,
    process: &ProcessRef,
    stream: LogStream,
    mut offset: i64,
    follow: bool,
    tx: &mpsc::Sender<Result<LogChunk, Status>>,
) -> Result<(), Error> {
    let mut snapshots = master.subscribe();
    let mut reading_from: Option<String> = None;
    // The master's kept copy was served (the worker was gone): a later worker's file is a new
    // attempt's and is read from its start.
    let mut served_kept = false;
    // Without `follow`, the log ends where the file ended at the first read, however much a
    // busy driver writes meanwhile.
    let mut end: Option<u64> = None;
    loop {
        if tx.is_closed() || master.shutdown.is_cancelled() {
            return Ok(());
        }
        let (worker_id, ended) = {
            let snap: Arc<State> = snapshots.borrow_and_update().clone();
            snap.log_source(process)?
        };
        let connected = worker_id
            .as_ref()
            .filter(|w| master.links.get(w).is_some())
            .cloned();
        let Some(worker_id) = connected else {
            // Its worker is gone, or it waits to be relaunched: what the master kept, from where
            // reading stopped, once.
            if !served_kept
                && let Some(next) = copy_kept(master, process, stream, offset, tx).await?
            {
                served_kept = true;
                offset = i64::try_from(next).unwrap_or(i64::MAX);
            }
            if worker_id.is_some() && !served_kept {
                return Err(Error::Unavailable(format!(
                    "the logs of {process} are on {}, which is not connected, and the master \
                     kept none of them",
                    worker_id.unwrap_or_default()
                )));
            }
            if !follow || ended {
                return Ok(());
            }
            wait_for_change(&mut snapshots, tx).await;
            continue;
        };
        if reading_from.as_deref() != Some(&worker_id) {
            if reading_from.is_some() || served_kept {
                offset = 0;
            }
            reading_from = Some(worker_id.clone());
        }
        let data = master
            .links
            .read_log(&worker_id, process, stream, offset, LOG_CHUNK)
            .await?;
        let end = *end.get_or_insert(data.size);
        if !data.data.is_empty() {
            let next = data.offset.saturating_add(data.data.len() as u64);
            offset = i64::try_from(next).unwrap_or(i64::MAX);
            let chunk = LogChunk {
                data: data.data,
                offset: data.offset,
                ..Default::default()
            };
            if !send(tx, Ok(chunk), &master.shutdown).await {
                return Ok(());
            }
            if !follow && next >= end {
                return Ok(());
            }
            continue;
        }
        offset = i64::try_from(data.offset).unwrap_or(i64::MAX);
        // The driver had ended before this read, so the file is complete.
        if !follow || ended {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return Ok(()),
        }
    }
}

/// Streams what the master kept of a log from `offset` (negative: before the end); the
/// offset after the last byte sent, or `None` when nothing of it was kept.
async fn copy_kept(
    master: &MasterHandle,
    process: &ProcessRef,
    stream: LogStream,
    offset: i64,
    tx: &mpsc::Sender<Result<LogChunk, Status>>,
) -> Result<Option<u64>, Error> {
    let Some(first) = master
        .kept_logs
        .read(process, stream, offset, u64::from(LOG_CHUNK))
        .await?
    else {
        return Ok(None);
    };
    let mut next = first.offset;
    let mut piece = Some(first);
    while let Some(kept) = piece.take() {
        if kept.data.is_empty() {
            break;
        }
        next = kept.offset + kept.data.len() as u64;
        let chunk = LogChunk {
            data: kept.data,
            offset: kept.offset,
            kept: true,
            kept_from: kept.kept_from,
            size: kept.size,
        };
        if !send(tx, Ok(chunk), &master.shutdown).await {
            return Ok(Some(next));
        }
        piece = master
            .kept_logs
            .read(
                process,
                stream,
                i64::try_from(next).unwrap_or(i64::MAX),
                u64::from(LOG_CHUNK),
            )
            .await?;
    }
    tracing::debug!(%process, next, "kept log served");
    Ok(Some(next))
}

/// Sends unless the client went away or the master is stopping; says whether it was sent.
async fn send<T>(
    tx: &mpsc::Sender<Result<T, Status>>,
    item: Result<T, Status>,
    shutdown: &hearth_common::Shutdown,
) -> bool {
    tokio::select! {
        sent = tx.send(item) => sent.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}

async fn wait_for_change(
    snapshots: &mut tokio::sync::watch::Receiver<Arc<State>>,
    tx: &mpsc::Sender<Result<LogChunk, Status>>,
) {
    tokio::select! {
        _ = snapshots.changed() => {}
        _ = tokio::time::sleep(FOLLOW_POLL) => {}
        _ = tx.closed() => {}
    }
}
