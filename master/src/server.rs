//! Binds the master's ports and runs its parts until shutdown.

use std::{net::SocketAddr, sync::Arc};

use hearth_common::Shutdown;
use tokio::task::JoinHandle;

use crate::{
    actor::{self, MasterHandle},
    config::MasterConfig,
    driver_tokens::DriverTokens,
    error::{Error, Result},
    grpc,
    listen::{Listener, bind},
    queue_file, tls, web,
};

/// A started master: where it listens, a handle on its state, and its tasks.
#[derive(Debug)]
pub struct RunningMaster {
    pub grpc_addr: SocketAddr,
    pub web_addr: SocketAddr,
    /// The URL workers and clients use.
    pub url: String,
    /// Both ports serve TLS.
    pub tls: bool,
    pub handle: MasterHandle,
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl RunningMaster {
    /// Waits for every part to stop. The first part to end (after `shutdown`, or because it
    /// failed) stops the others.
    pub async fn wait(self) -> Result<()> {
        let mut parts: tokio::task::JoinSet<Result<()>> = tokio::task::JoinSet::new();
        for task in self.tasks {
            parts.spawn(async move {
                task.await
                    .map_err(|e| Error::Internal(format!("task panicked: {e}")))?
            });
        }
        let mut first_error = None;
        while let Some(done) = parts.join_next().await {
            self.handle.shutdown.cancel();
            let result = done.map_err(|e| Error::Internal(format!("task panicked: {e}")));
            if let Err(e) | Ok(Err(e)) = result {
                tracing::error!(error = %e, "master part failed");
                first_error.get_or_insert(e);
            }
        }
        // Shipped logs are synced in the background about once a second: the last of them
        // are made to survive this stop.
        let kept_logs = self.handle.kept_logs.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || kept_logs.sync()).await {
            tracing::warn!(error = %e, "the last shipped logs are not synced");
        }
        // The actor has stopped: the state file is made whole by itself, so a restart has no
        // journal to write again and the file alone can be copied.
        let store = self.handle.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || store.checkpoint()).await {
            tracing::warn!(error = %e, "the state file is not checkpointed; the next start writes the journal into it");
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Validates `config`, binds both ports and starts the actor, gRPC and web servers: a single
/// master, acting for as long as it runs.
pub async fn start(config: MasterConfig, shutdown: Shutdown) -> Result<RunningMaster> {
    start_with(config, crate::ha::Leadership::single(), shutdown).await
}

/// [`start`] for a term of `leadership`: it acts only while the term lasts.
pub async fn start_with(
    config: MasterConfig,
    leadership: Arc<crate::ha::Leadership>,
    shutdown: Shutdown,
) -> Result<RunningMaster> {
    config.validate()?;
    // Opened (and read) before the ports are bound: a master that cannot keep its state, or
    // cannot read it, does not start.
    let (store, loaded) = crate::store::Store::open(&config.state_dir)?;
    store.set_history_limit(config.retained_history);
    tracing::info!(path = %store.path().display(), drivers = loaded.drivers.len(),
        apps = loaded.apps.len(), workers = loaded.workers.len(), "state file opened");
    let cert = match &config.tls {
        Some(files) => {
            let cert = tls::ReloadingCert::load(files.clone())?;
            // gRPC clients insist on HTTP/2; browsers may pick either.
            let grpc_tls = cert.acceptor(&[b"h2"])?;
            let web_tls = cert.acceptor(&[b"h2", b"http/1.1"])?;
            Some((cert, grpc_tls, web_tls))
        }
        None => None,
    };
    let grpc_listener = bind("gRPC", config.grpc_addr).await?;
    let web_listener = bind("web UI", config.web_addr).await?;
    let grpc_addr = grpc_listener.local_addr().map_err(|source| Error::Bind {
        what: "gRPC",
        addr: config.grpc_addr,
        source,
    })?;
    let web_addr = web_listener.local_addr().map_err(|source| Error::Bind {
        what: "web UI",
        addr: config.web_addr,
        source,
    })?;
    let url = config.public_url.clone().unwrap_or_else(|| {
        let host = if grpc_addr.ip().is_unspecified() {
            "127.0.0.1".to_string()
        } else {
            grpc_addr.ip().to_string()
        };
        let scheme = if cert.is_some() { "https" } else { "http" };
        format!("{scheme}://{host}:{}", grpc_addr.port())
    });
    if config.secret.is_none() {
        tracing::warn!(
            "running WITHOUT a shared secret: anyone who reaches {grpc_addr} can run commands"
        );
    }
    // A broken queues file at start stops the master, with its line and reason.
    let queues = match &config.queues_file {
        Some(path) => {
            let text = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "queues file {}: cannot read it: {e}",
                    path.display()
                ))
            })?;
            let parsed =
                queue_file::parse(&path.display().to_string(), &String::from_utf8_lossy(&text))
                    .map_err(|e| Error::Config(format!("queues file {e}")))?;
            tracing::info!(path = %path.display(), queues = %parsed.tree.names(),
                tenants = parsed.tenants.all().len(), "queues file read");
            if !parsed.tenants.is_empty() && config.secret.is_none() {
                tracing::warn!(
                    "the queues file names tenants, but this master runs without a secret: every caller may do anything, and tenants' queues and ownership are not enforced"
                );
            }
            parsed
        }
        None => queue_file::QueueConfig::default(),
    };
    let in_force = queues.clone();
    let tokens = Arc::new(match (&config.ha, &config.secret) {
        (Some(_), Some(secret)) => {
            DriverTokens::from_secret(secret, config.previous_secret.as_ref())
        }
        _ => DriverTokens::load_or_create(&config.state_dir)?,
    });
    let kept_logs = crate::kept_logs::KeptLogs::open(&config.state_dir, config.kept_logs_bytes)?;
    let config = Arc::new(config);
    let (handle, actor_task) = actor::spawn(
        config.clone(),
        url.clone(),
        (store, loaded),
        (Arc::new(queues.tree), Arc::new(queues.tenants)),
        tokens,
        kept_logs,
        leadership,
        shutdown.clone(),
    )?;
    let mut tasks: Vec<JoinHandle<Result<()>>> = Vec::new();
    tasks.push(tokio::spawn(async move {
        actor_task
            .await
            .map_err(|e| Error::Internal(format!("state actor panicked: {e}")))?
    }));
    let tls_on = cert.is_some();
    let (grpc_tls, web_listener) = match cert {
        Some((cert, grpc_tls, web_tls)) => {
            tasks.push(tokio::spawn({
                let watch = cert.watch(shutdown.clone());
                async move {
                    watch.await;
                    Ok(())
                }
            }));
            (
                Some(grpc_tls),
                Listener::Tls(tls::incoming(web_listener, web_tls, shutdown.clone())),
            )
        }
        None => (None, Listener::Plain(web_listener)),
    };
    {
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            grpc::own_thread::serve(handle, grpc_listener, grpc_tls, shutdown).await
        }));
    }
    tasks.push(tokio::spawn(sample_use(handle.clone(), shutdown.clone())));
    if let Some(autoscale) = config.autoscale.clone() {
        let (handle, shutdown) = (handle.clone(), shutdown.clone());
        let status = handle.autoscale.clone();
        tasks.push(tokio::spawn(async move {
            crate::autoscale::run(handle, autoscale, status, shutdown).await;
            Ok(())
        }));
    }
    if let Some(path) = config.queues_file.clone() {
        tasks.push(tokio::spawn(queue_file::watch(
            path,
            in_force,
            handle.clone(),
            shutdown.clone(),
        )));
    }
    {
        let handle = handle.clone();
        let shutdown = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            web::serve(handle, web_listener, shutdown)
                .await
                .map_err(|e| Error::Internal(format!("web server: {e}")))
        }));
    }
    tracing::info!(%grpc_addr, %web_addr, url, tls = tls_on, "master started");
    Ok(RunningMaster {
        grpc_addr,
        web_addr,
        url,
        tls: tls_on,
        handle,
        tasks,
    })
}

/// Records cluster use every sample interval for the UI's chart, from the first moment on.
async fn sample_use(handle: MasterHandle, shutdown: Shutdown) -> Result<()> {
    let mut tick = tokio::time::interval(handle.config.sample_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tick.tick() => {
                let sample = crate::telemetry::Sample::of(&handle.snapshot(), hearth_common::ids::now_ms());
                handle.telemetry.push_sample(sample);
            }
        }
    }
}
