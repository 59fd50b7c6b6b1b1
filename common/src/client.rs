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

use std::time::Duration;

use tonic::{
    Streaming,
    codegen::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    MAX_MESSAGE_BYTES,
    auth::{Secret, SendSecret},
    error::{Error, Result},
    proto::{
        self, Driver, DriverSpec, LogChunk, LogStream, Worker,
        client_service_client::ClientServiceClient, worker_service_client::WorkerServiceClient,
    },
};

/// Makes a channel to a master URL (`http://host:7077`), failing fast when it is unreachable.
pub fn endpoint(url: &str) -> Result<Endpoint> {
    let url = url.trim();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(Error::MasterUrl {
            url: url.to_string(),
            reason: "must start with http:// (like http://127.0.0.1:7077)".into(),
        });
    }
    Ok(Endpoint::from_shared(url.to_string())
        .map_err(|e| Error::MasterUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true))
}

/// Connects to `url`.
pub async fn channel(url: &str) -> Result<Channel> {
    endpoint(url)?
        .connect()
        .await
        .map_err(|source| Error::Connect {
            url: url.to_string(),
            source,
        })
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
    /// Connects to the master at `url` (`http://host:7077`) with the shared secret, if any.
    pub async fn connect(url: &str, secret: Option<&Secret>) -> Result<Self> {
        let channel = channel(url).await?;
        Self::from_channel(channel, secret)
    }

    pub fn from_channel(channel: Channel, secret: Option<&Secret>) -> Result<Self> {
        let inner = ClientServiceClient::with_interceptor(channel, SendSecret::new(secret)?)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        Ok(Self { inner })
    }

    /// Submits a driver; returns its id once the master has accepted it.
    pub async fn submit(&self, spec: DriverSpec) -> Result<String> {
        let resp = self
            .inner
            .clone()
            .submit_driver(proto::SubmitDriverRequest { spec: Some(spec) })
            .await?;
        Ok(resp.into_inner().driver_id)
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
            .list_drivers(proto::ListDriversRequest {})
            .await?;
        Ok(resp.into_inner().drivers)
    }

    pub async fn workers(&self) -> Result<Vec<Worker>> {
        let resp = self
            .inner
            .clone()
            .list_workers(proto::ListWorkersRequest {})
            .await?;
        Ok(resp.into_inner().workers)
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
        Ok(crate::states::driver_state(resp.into_inner().state))
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
            if crate::states::driver_state(driver.state).is_terminal() {
                return Ok(driver);
            }
        }
        Err(Error::StreamClosed)
    }

    /// A driver's stdout or stderr from `offset` (negative: from that many bytes before the end).
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
                driver_id: id.to_string(),
                stream: stream as i32,
                offset,
                follow,
            })
            .await?;
        Ok(resp.into_inner())
    }
}
