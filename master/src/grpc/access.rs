//! Who is calling the client service, and what they may do. The bearer token names the caller:
//! the cluster secret is the admin (anything); a tenant's token lets it submit into its queues,
//! see everything, and kill or read the logs of its own work; a driver's own token lets it act on
//! its driver and application only, and only while that attempt runs. Anything else is
//! UNAUTHENTICATED; a known caller reaching beyond its reach is PERMISSION_DENIED with the
//! reason, and nothing changes.

use std::sync::Arc;

use hearth_common::{
    auth::CheckSecret, ids::ProcessRef, proto::DriverState, state_names::StateName,
};
use tonic::{Request, Status, service::Interceptor};

use crate::{actor::MasterHandle, driver_tokens::DriverTokens, state::State};

/// The caller of one request, as its token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The cluster secret (or a master running without one).
    Admin,
    Tenant {
        name: String,
        queues: Arc<[String]>,
    },
    /// A driver's own token: that attempt of that driver.
    Driver {
        driver_id: String,
        attempt: u32,
    },
}

/// Resolves the caller from the `authorization` header and puts it in the request.
#[derive(Clone, Debug)]
pub struct Authenticate {
    secret: CheckSecret,
    insecure: bool,
    master: MasterHandle,
    tokens: Arc<DriverTokens>,
}

impl Authenticate {
    pub fn new(master: MasterHandle) -> Self {
        Self {
            secret: master.config.secret_check(),
            insecure: master.config.secret.is_none(),
            tokens: master.tokens.clone(),
            master,
        }
    }

    fn caller(&self, header: Option<&[u8]>) -> Result<Caller, Status> {
        if self.insecure {
            return Ok(Caller::Admin);
        }
        let Some(token) = header.map(|h| h.strip_prefix(b"Bearer ").unwrap_or(b"")) else {
            return Err(Status::unauthenticated(
                "missing authorization: this master requires the shared secret (HEARTH_SECRET), \
                 a tenant's token or a driver's own",
            ));
        };
        if self.secret.accepts(token) {
            return Ok(Caller::Admin);
        }
        if let Some((driver_id, attempt)) = self.tokens.verify(token) {
            return Ok(Caller::Driver { driver_id, attempt });
        }
        let state = self.master.snapshot();
        match state.tenants.identify(token) {
            Some(t) => Ok(Caller::Tenant {
                name: t.name.clone(),
                queues: t.queues.clone().into(),
            }),
            None => Err(Status::unauthenticated(
                "wrong secret: the token is not the master's shared secret, a tenant's token, or \
                 a driver's own",
            )),
        }
    }
}

impl Interceptor for Authenticate {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let caller = self.caller(header)?;
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The caller the interceptor found; a request that skipped it is refused.
pub fn caller_of<T>(request: &Request<T>) -> Result<Caller, Status> {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("no caller: the request was not authenticated"))
}

fn denied(message: String) -> Status {
    Status::permission_denied(message)
}

impl Caller {
    /// The tenant name recorded as the owner of what this caller creates.
    pub fn owner(&self) -> Option<String> {
        match self {
            Caller::Tenant { name, .. } => Some(name.clone()),
            Caller::Admin | Caller::Driver { .. } => None,
        }
    }

    /// A driver token is good only while its attempt runs.
    fn running_driver<'a>(
        state: &'a State,
        driver_id: &str,
        attempt: u32,
    ) -> Result<&'a crate::state::DriverInfo, Status> {
        let d = state.drivers.get(driver_id).ok_or_else(|| {
            Status::unauthenticated(format!("this driver token's driver {driver_id} is gone"))
        })?;
        if d.state != DriverState::Running || d.attempt != attempt {
            return Err(Status::unauthenticated(format!(
                "this driver token is for attempt {attempt} of {driver_id}, which is not running \
                 ({} now, attempt {})",
                d.state.name(),
                d.attempt
            )));
        }
        Ok(d)
    }

    /// May submit a driver into `queue` (empty: `default`).
    pub fn may_submit(&self, queue: &str) -> Result<(), Status> {
        let queue = if queue.is_empty() {
            crate::schedule::DEFAULT_QUEUE
        } else {
            queue
        };
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant { queues, .. } if queues.iter().any(|q| q == queue) => Ok(()),
            Caller::Tenant { name, queues } => Err(denied(format!(
                "queue: tenant {name} may submit into {}; not into {queue}",
                queues.join(", ")
            ))),
            Caller::Driver { driver_id, .. } => Err(denied(format!(
                "a driver's token ({driver_id}) acts on its own driver and application only; \
                 it cannot submit drivers"
            ))),
        }
    }

    /// May see everything (lists, other drivers and applications).
    pub fn may_list(&self) -> Result<(), Status> {
        match self {
            Caller::Admin | Caller::Tenant { .. } => Ok(()),
            Caller::Driver { driver_id, .. } => Err(denied(format!(
                "a driver's token ({driver_id}) sees its own driver and application only"
            ))),
        }
    }

    /// May read driver `id` (a driver only itself).
    pub fn may_see_driver(&self, state: &State, id: &str) -> Result<(), Status> {
        match self {
            Caller::Driver { driver_id, attempt } => {
                Self::running_driver(state, driver_id, *attempt)?;
                if id == driver_id {
                    Ok(())
                } else {
                    Err(denied(format!(
                        "a driver's token ({driver_id}) sees its own driver only, not {id}"
                    )))
                }
            }
            _ => Ok(()),
        }
    }

    /// May kill driver `id` or read its logs: the admin any, a tenant its own, a driver itself.
    pub fn may_act_on_driver(&self, state: &State, id: &str) -> Result<(), Status> {
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant { name, .. } => {
                let owner = state.drivers.get(id).and_then(|d| d.owner.as_deref());
                if owner == Some(name.as_str()) {
                    Ok(())
                } else if state.drivers.contains_key(id) {
                    Err(denied(format!(
                        "{id} belongs to {}; tenant {name} may act on its own work only",
                        owner.map_or("the cluster's admin".to_string(), |o| format!("tenant {o}"))
                    )))
                } else {
                    // Refused here rather than passed on: the actor may know a newer driver by
                    // this id than the snapshot, and it does not check owners.
                    Err(Status::not_found(format!("no driver {id}")))
                }
            }
            Caller::Driver { .. } => self.may_see_driver(state, id),
        }
    }

    /// May change application `app_id` (executors, end) or read its executors' logs: the admin
    /// any, a tenant its own, a driver the application bound to it.
    pub fn may_act_on_app(&self, state: &State, app_id: &str) -> Result<(), Status> {
        let app = state.apps.get(app_id);
        match self {
            Caller::Admin => Ok(()),
            Caller::Tenant { name, .. } => match app {
                Some(a) if a.owner.as_deref() != Some(name.as_str()) => Err(denied(format!(
                    "{app_id} belongs to {}; tenant {name} may act on its own work only",
                    a.owner
                        .as_deref()
                        .map_or("the cluster's admin".to_string(), |o| format!("tenant {o}"))
                ))),
                Some(_) => Ok(()),
                // As for drivers: an id the snapshot does not know yet is not passed on.
                None => Err(Status::not_found(format!("no application {app_id}"))),
            },
            Caller::Driver { driver_id, attempt } => {
                Self::running_driver(state, driver_id, *attempt)?;
                match app {
                    Some(a) if a.driver_id.as_deref() == Some(driver_id.as_str()) => Ok(()),
                    _ => Err(denied(format!(
                        "a driver's token ({driver_id}) acts on its own application only, not \
                         {app_id}"
                    ))),
                }
            }
        }
    }

    /// May kill driver `id`: as [`Caller::may_act_on_driver`], but a driver's own token may
    /// not (a driver ends by exiting; a kill by an ended attempt's token could reach the next).
    pub fn may_kill_driver(&self, state: &State, id: &str) -> Result<(), Status> {
        match self {
            Caller::Driver { driver_id, .. } => Err(denied(format!(
                "a driver's token ({driver_id}) cannot kill drivers; a driver ends by exiting"
            ))),
            _ => self.may_act_on_driver(state, id),
        }
    }

    /// The attempt an application registration binds to: a driver's token only ever its own.
    pub fn attempt_for(&self, requested: u32) -> u32 {
        match self {
            Caller::Driver { attempt, .. } => *attempt,
            _ => requested,
        }
    }

    /// May read application `app_id`: anyone who may list, or its own driver.
    pub fn may_see_app(&self, state: &State, app_id: &str) -> Result<(), Status> {
        match self {
            Caller::Driver { .. } => self.may_act_on_app(state, app_id),
            _ => Ok(()),
        }
    }

    /// May register an application for `driver` (or none): a tenant for its own driver or none;
    /// a driver for itself only.
    pub fn may_register_app(
        &self,
        state: &State,
        driver: Option<&str>,
        queue: &str,
    ) -> Result<(), Status> {
        match (self, driver) {
            (Caller::Admin, _) => Ok(()),
            (Caller::Tenant { .. }, Some(d)) => self.may_act_on_driver(state, d),
            (Caller::Tenant { .. }, None) => self.may_submit(queue),
            (Caller::Driver { driver_id, .. }, Some(d)) if d == driver_id => {
                self.may_see_driver(state, d)
            }
            (Caller::Driver { driver_id, .. }, _) => Err(denied(format!(
                "a driver's token ({driver_id}) registers applications for its own driver only"
            ))),
        }
    }

    /// May read the logs of `process`.
    pub fn may_read_log(&self, state: &State, process: &ProcessRef) -> Result<(), Status> {
        match process {
            ProcessRef::Driver(id) => self.may_act_on_driver(state, id),
            ProcessRef::Executor { app_id, .. } => self.may_act_on_app(state, app_id),
        }
    }
}
