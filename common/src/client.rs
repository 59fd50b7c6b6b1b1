//! The Rust client library: what the `hearth` command, drivers and tests use to talk to a master.
//!
//! ```no_run
//! # async fn demo() -> hearth_common::Result<()> {
//! use hearth_common::{client::Client, proto::DriverSpec};
//! let client = Client::connect("http://127.0.0.1:7077", None).await?;
//! let id = client
//!     .submit(DriverSpec {
//!         command: vec!["echo".into(), "hi".into()],
//!         cores: 1,
//!         memory_mb: 256,
//!         ..Default::default()
//!     })
//!     .await?;
//! println!("{id}");
//! # Ok(()) }
//! ```

use std::{path::PathBuf, time::Duration};

use tonic::{
    Streaming,
    codegen::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::{
    MAX_MESSAGE_BYTES,
    auth::{Secret, SendSecret},
    error::{Error, Result},
    proto::{
        self, Application, ApplicationSpec, Driver, DriverSpec, LogChunk, LogStream,
        RegisterApplicationRequest, Worker, client_service_client::ClientServiceClient,
        worker_service_client::WorkerServiceClient,
    },
};

/// How long a submission keeps being sent again (same submission id) while the master cannot
/// confirm it: longer than a master's restart or a failover.
const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(20);

/// How long a client waits for a connection to open. A Service can still send a new connection
/// to a master that has just gone (until the node's proxy rules catch up), where it is neither
/// accepted nor refused; trying again sooner reaches the new leader sooner.
const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a client's connection is checked with an HTTP/2 ping, and how long the answer may
/// take. A master that vanished without closing the connection (its node or network lost) is
/// found within twice this, so a call in flight fails and is retried on a new connection
/// (through the Service, to the new leader) instead of waiting out the call timeout.
const CLIENT_KEEPALIVE: Duration = Duration::from_secs(2);

/// Whether a failed call may have failed before the master acted, so repeating it is the
/// way to find out (with a submission id, repeating is always safe).
fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Unknown
    )
}

/// Where drivers find their master.
pub const MASTER_URL_ENV: &str = "HEARTH_MASTER_URL";
/// The master a client dials when told none: the master's default gRPC port on loopback
/// (a test in the master's config keeps the two in step).
/// How long the `hearth` command keeps trying to reach a master that does not answer.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
pub const DEFAULT_MASTER_URL: &str = "http://127.0.0.1:7077";

/// An application for the driver this process is: it belongs to the driver named by
/// `HEARTH_DRIVER_ID`, attempt `HEARTH_ATTEMPT` (so it ends when that attempt ends), and its
/// executors reach the driver at `HEARTH_DRIVER_HOST`. Outside Hearth both are empty and the application stands alone.
pub fn app_for_this_driver(spec: ApplicationSpec) -> RegisterApplicationRequest {
    RegisterApplicationRequest {
        spec: Some(spec),
        driver_id: std::env::var("HEARTH_DRIVER_ID").unwrap_or_default(),
        driver_host: std::env::var("HEARTH_DRIVER_HOST").unwrap_or_default(),
        driver_attempt: std::env::var("HEARTH_ATTEMPT")
            .ok()
            .and_then(|a| a.parse().ok())
            .unwrap_or(0),
    }
}

/// Longest wait for any call's answer; a master that takes longer is treated as unreachable
/// (and a submission is retried with its submission id).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificate authority (PEM) that signed the master's certificate, for `https://` URLs.
pub const TLS_CA_ENV: &str = "HEARTH_TLS_CA";

/// How a client checks an `https://` master: against one CA file, or the system's roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// PEM file of the CA to trust; read again at every connect, so a renewed CA file is
    /// picked up by the next reconnection.
    pub ca_file: Option<PathBuf>,
}

impl ClientTls {
    pub fn with_ca(ca_file: Option<PathBuf>) -> Self {
        Self { ca_file }
    }

    /// The CA named by `HEARTH_TLS_CA`, as a worker passes it to the drivers it runs.
    pub fn from_env() -> Self {
        Self::with_ca(std::env::var_os(TLS_CA_ENV).map(PathBuf::from))
    }

    /// Reads and checks the CA file: at least one certificate, all of them well formed.
    fn ca_certificate(&self) -> Result<Option<Certificate>> {
        let Some(path) = &self.ca_file else {
            return Ok(None);
        };
        let error = |reason: String| Error::TlsCa {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
        use rustls::pki_types::{CertificateDer, pem::PemObject};
        let count = CertificateDer::pem_slice_iter(&pem)
            .try_fold(0usize, |n, cert| cert.map(|_| n + 1))
            .map_err(|e| error(format!("not a PEM certificate: {e}")))?;
        if count == 0 {
            return Err(error("holds no CERTIFICATE block".into()));
        }
        Ok(Some(Certificate::from_pem(pem)))
    }

    /// The TLS settings for `url`, or none for `http://`.
    fn config_for(&self, url: &str) -> Result<Option<ClientTlsConfig>> {
        if !url.starts_with("https://") {
            return match &self.ca_file {
                Some(path) => Err(Error::TlsCa {
                    path: path.display().to_string(),
                    reason: format!("given, but the master URL {url} is not https://"),
                }),
                None => Ok(None),
            };
        }
        Ok(Some(match self.ca_certificate()? {
            Some(ca) => ClientTlsConfig::new().ca_certificate(ca),
            None => ClientTlsConfig::new().with_native_roots(),
        }))
    }
}

/// The endpoint for a master URL (`http://host:7077`, or `https://` with `tls`), with the
/// timeouts and keep-alives every Hearth connection uses.
pub fn endpoint(url: &str, tls: &ClientTls) -> Result<Endpoint> {
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::MasterUrl {
            url: url.to_string(),
            reason: format!("must start with http:// or https:// (like {DEFAULT_MASTER_URL})"),
        });
    }
    let mut endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::MasterUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        // Until the answer's headers: a whole unary call, or the opening of a stream.
        .timeout(CALL_TIMEOUT)
        .tcp_nodelay(true)
        // Longer than a large cluster's heartbeat interval (10 s at 10,000 workers): a worker's
        // stream is watched by its heartbeats and their answers, not by pings beside them.
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(config) = tls.config_for(url)? {
        endpoint = endpoint.tls_config(config).map_err(|e| Error::MasterUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(endpoint)
}

/// Connects to `url`, failing fast when it is unreachable.
pub async fn channel(url: &str, tls: &ClientTls) -> Result<Channel> {
    endpoint(url, tls)?
        .connect()
        .await
        .map_err(|cause| Error::Connect {
            url: url.to_string(),
            cause,
        })
}

/// Whether a connection failed because the master could not be reached at all, which a master
/// restarting or not up yet explains, rather than because of what it answered.
fn unreachable(error: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind::*;
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                ConnectionRefused
                    | ConnectionReset
                    | ConnectionAborted
                    | NotConnected
                    | TimedOut
                    | HostUnreachable
                    | NetworkUnreachable
            )
        {
            return true;
        }
        next = e.source();
    }
    false
}

pub type AuthedChannel = InterceptedService<Channel, SendSecret>;

/// The worker side of the protocol, with the secret attached.
pub fn worker_client(
    channel: Channel,
    secret: Option<&Secret>,
) -> Result<WorkerServiceClient<AuthedChannel>> {
    Ok(
        WorkerServiceClient::with_interceptor(channel, SendSecret::new(secret)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

/// A connection to a master's client service. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Client {
    inner: ClientServiceClient<AuthedChannel>,
}

impl Client {
    /// Connects to the master at `url` (`http://host:7077`) with the shared secret, if any;
    /// an `https://` master is checked against the system's roots.
    pub async fn connect(url: &str, secret: Option<&Secret>) -> Result<Self> {
        Self::connect_with(url, secret, &ClientTls::default()).await
    }

    /// Connects with the TLS settings given (a CA file for a master with a private CA).
    pub async fn connect_with(url: &str, secret: Option<&Secret>, tls: &ClientTls) -> Result<Self> {
        let channel = endpoint(url, tls)?
            .connect_timeout(CLIENT_CONNECT_TIMEOUT)
            .http2_keep_alive_interval(CLIENT_KEEPALIVE)
            .keep_alive_timeout(CLIENT_KEEPALIVE)
            .connect()
            .await
            .map_err(|cause| Error::Connect {
                url: url.to_string(),
                cause,
            })?;
        Self::from_channel(channel, secret)
    }

    /// [`Client::connect_with`], tried again with back-off (100 ms doubling to 1 s) while the
    /// master cannot be reached (refused, reset, timed out: restarting, or not up yet) for up
    /// to `within`. What trying again cannot mend (a TLS failure, a bad URL) is returned at once.
    pub async fn connect_retrying(
        url: &str,
        secret: Option<&Secret>,
        tls: &ClientTls,
        within: Duration,
    ) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + within;
        let mut delay = Duration::from_millis(100);
        loop {
            match Self::connect_with(url, secret, tls).await {
                Err(Error::Connect { cause, .. })
                    if unreachable(&cause) && tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::warn!(url, error = %cause, retry_in_ms = delay.as_millis() as u64,
                        "master not reachable; trying again");
                    tokio::time::sleep(delay).await;
                    // At most a second apart: a master's failover or restart takes seconds, and a
                    // longer wait would add to it what the client sees.
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    pub fn from_channel(channel: Channel, secret: Option<&Secret>) -> Result<Self> {
        let inner = ClientServiceClient::with_interceptor(channel, SendSecret::new(secret)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { inner })
    }

    /// Connects the way a driver run by Hearth does: to `HEARTH_MASTER_URL` (default
    /// `http://127.0.0.1:7077`) with the secret from `HEARTH_SECRET` or `HEARTH_SECRET_FILE`,
    /// trusting the CA in `HEARTH_TLS_CA` when set.
    pub async fn from_env() -> Result<Self> {
        let url = std::env::var(MASTER_URL_ENV).unwrap_or_else(|_| DEFAULT_MASTER_URL.into());
        let file = std::env::var_os(crate::auth::SECRET_FILE_ENV).map(PathBuf::from);
        let secret = Secret::resolve(file.as_deref())?;
        Self::connect_with(&url, secret.as_ref(), &ClientTls::from_env()).await
    }

    /// Submits a driver; returns its id once the master has accepted it.
    pub async fn submit(&self, spec: DriverSpec) -> Result<String> {
        self.submit_with_app(spec, None).await
    }

    /// Submits a driver whose every launch registers an application with these executors.
    /// The submission carries a fresh submission id, so the retries made here when the master
    /// cannot be reached (or restarts) never create a second driver.
    pub async fn submit_with_app(
        &self,
        spec: DriverSpec,
        application: Option<ApplicationSpec>,
    ) -> Result<String> {
        self.submit_as(spec, application, crate::spec::new_submission_id())
            .await
    }

    /// Submits under the caller's own submission id: sent again, by the retries made here or
    /// by a script running the whole submission again, it is answered with the driver the first
    /// one made. The same id with a different spec is refused (ALREADY_EXISTS).
    pub async fn submit_as(
        &self,
        spec: DriverSpec,
        application: Option<ApplicationSpec>,
        submission_id: String,
    ) -> Result<String> {
        let request = proto::SubmitDriverRequest {
            spec: Some(spec),
            application,
            submission_id,
        };
        let deadline = tokio::time::Instant::now() + SUBMIT_RETRY_FOR;
        let mut delay = Duration::from_millis(200);
        loop {
            match self.submit_request(request.clone()).await {
                Err(Error::Status(status))
                    if retryable(&status) && tokio::time::Instant::now() + delay < deadline =>
                {
                    tracing::warn!(error = %status.message(), retry_in_ms = delay.as_millis() as u64,
                        "submission not confirmed; retrying with the same submission id");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
                other => return other,
            }
        }
    }

    /// Sends one submission as it is; with a submission id the master has seen, it answers
    /// with the driver that id made.
    pub async fn submit_request(&self, request: proto::SubmitDriverRequest) -> Result<String> {
        let resp = self.inner.clone().submit_driver(request).await?;
        Ok(resp.into_inner().driver_id)
    }

    /// Registers an application; its executors are placed as soon as there is room.
    pub async fn register_app(&self, request: RegisterApplicationRequest) -> Result<Application> {
        Ok(self
            .inner
            .clone()
            .register_application(request)
            .await?
            .into_inner())
    }

    /// Asks for `count` more executors, within the application's cap.
    pub async fn request_executors(&self, app_id: &str, count: u32) -> Result<Application> {
        let request = proto::RequestExecutorsRequest {
            app_id: app_id.to_string(),
            count,
        };
        Ok(self
            .inner
            .clone()
            .request_executors(request)
            .await?
            .into_inner())
    }

    /// Kills some of an application's executors; they are not replaced.
    pub async fn kill_executors(&self, app_id: &str, executor_ids: &[u32]) -> Result<Application> {
        let request = proto::KillExecutorsRequest {
            app_id: app_id.to_string(),
            executor_ids: executor_ids.to_vec(),
        };
        Ok(self
            .inner
            .clone()
            .kill_executors(request)
            .await?
            .into_inner())
    }

    /// Ends an application as FINISHED, freeing its executors' slots.
    pub async fn unregister_app(&self, app_id: &str) -> Result<Application> {
        let request = proto::UnregisterApplicationRequest {
            app_id: app_id.to_string(),
        };
        Ok(self
            .inner
            .clone()
            .unregister_application(request)
            .await?
            .into_inner())
    }

    pub async fn app(&self, app_id: &str) -> Result<Application> {
        let request = proto::GetApplicationRequest {
            app_id: app_id.to_string(),
        };
        Ok(self
            .inner
            .clone()
            .get_application(request)
            .await?
            .into_inner())
    }

    pub async fn apps(&self) -> Result<Vec<Application>> {
        let resp = self
            .inner
            .clone()
            .list_applications(proto::ListApplicationsRequest {})
            .await?;
        Ok(resp.into_inner().applications)
    }

    /// Ends an application as KILLED; the driver it belongs to is killed too.
    pub async fn kill_app(&self, app_id: &str) -> Result<Application> {
        let request = proto::KillApplicationRequest {
            app_id: app_id.to_string(),
        };
        Ok(self
            .inner
            .clone()
            .kill_application(request)
            .await?
            .into_inner())
    }

    pub async fn driver(&self, id: &str) -> Result<Driver> {
        let resp = self
            .inner
            .clone()
            .get_driver(proto::GetDriverRequest {
                driver_id: id.to_string(),
            })
            .await?;
        Ok(resp.into_inner())
    }

    pub async fn drivers(&self) -> Result<Vec<Driver>> {
        let resp = self
            .inner
            .clone()
            .list_drivers(proto::ListDriversRequest::default())
            .await?;
        Ok(resp.into_inner().drivers)
    }

    /// One page of every driver, those the master keeps in memory and the completed ones in
    /// its history, newest id first; pass the returned token for the next page (empty after the
    /// last).
    pub async fn drivers_page(&self, page_size: u32, token: &str) -> Result<(Vec<Driver>, String)> {
        let resp = self
            .inner
            .clone()
            .list_drivers(proto::ListDriversRequest {
                page_size,
                page_token: token.to_string(),
            })
            .await?
            .into_inner();
        Ok((resp.drivers, resp.next_page_token))
    }

    pub async fn workers(&self) -> Result<Vec<Worker>> {
        let resp = self
            .inner
            .clone()
            .list_workers(proto::ListWorkersRequest {})
            .await?;
        Ok(resp.into_inner().workers)
    }

    /// The queues: settings, use and waiting work of each, and why the queues file last read
    /// was refused (empty when it was not).
    pub async fn queues(&self) -> Result<proto::ListQueuesResponse> {
        let resp = self
            .inner
            .clone()
            .list_queues(proto::ListQueuesRequest {})
            .await?;
        Ok(resp.into_inner())
    }

    /// Orders a driver killed; returns its state right after the order.
    pub async fn kill(&self, id: &str) -> Result<proto::DriverState> {
        let resp = self
            .inner
            .clone()
            .kill_driver(proto::KillDriverRequest {
                driver_id: id.to_string(),
            })
            .await?;
        Ok(crate::state_names::driver_state(resp.into_inner().state))
    }

    /// The driver now, then after every change, ending after a terminal state.
    pub async fn watch(&self, id: &str) -> Result<Streaming<Driver>> {
        let resp = self
            .inner
            .clone()
            .watch_driver(proto::WatchDriverRequest {
                driver_id: id.to_string(),
            })
            .await?;
        Ok(resp.into_inner())
    }

    /// Follows a driver until it reaches a terminal state, calling `on_change` on every update.
    pub async fn wait(&self, id: &str, mut on_change: impl FnMut(&Driver)) -> Result<Driver> {
        let mut stream = self.watch(id).await?;
        while let Some(driver) = stream.message().await? {
            on_change(&driver);
            if crate::state_names::driver_state(driver.state).is_terminal() {
                return Ok(driver);
            }
        }
        Err(Error::StreamClosed)
    }

    /// A driver's or executor's (`app-.../N`) stdout or stderr from `offset` (negative: from
    /// that many bytes before the end).
    pub async fn logs(
        &self,
        id: &str,
        stream: LogStream,
        offset: i64,
        follow: bool,
    ) -> Result<Streaming<LogChunk>> {
        let resp = self
            .inner
            .clone()
            .read_log(proto::ReadLogRequest {
                id: id.to_string(),
                stream: stream as i32,
                offset,
                follow,
            })
            .await?;
        Ok(resp.into_inner())
    }
}
