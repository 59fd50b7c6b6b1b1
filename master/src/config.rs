//! The master's settings as a plain struct, so tests and `hearth local` build it without clap.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use hearth_common::auth::Secret;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC (workers and clients); port 7077 by default.
    pub grpc_addr: SocketAddr,
    /// Web UI and JSON; port 8080 by default.
    pub web_addr: SocketAddr,
    pub secret: Option<Secret>,
    /// Run without a secret; refused unless set on purpose.
    pub insecure: bool,
    pub state_dir: PathBuf,
    /// A worker not heard from for this long is declared DEAD.
    pub worker_timeout: Duration,
    /// Completed drivers kept for the UI and API.
    pub retained_drivers: usize,
    /// Ended applications kept for the UI and API.
    pub retained_apps: usize,
    /// After a restart, how long the master waits for the workers it knew before declaring
    /// the missing ones DEAD. Longer than a worker's longest reconnect back-off (10 s).
    pub recovery_timeout: Duration,
    /// Most drivers waiting for a slot; submissions beyond it are refused (RESOURCE_EXHAUSTED).
    pub max_waiting: usize,
    /// Deal executors round-robin over workers (Spark's `spreadOut`); false fills each worker
    /// before the next.
    pub spread_out: bool,
    /// The URL clients use, shown in the UI and `/json/`; derived from the gRPC address if unset.
    pub public_url: Option<String>,
}

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::from(([0, 0, 0, 0], 7077)),
            web_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            secret: None,
            insecure: false,
            state_dir: PathBuf::from("./hearth-state"),
            worker_timeout: Duration::from_secs(10),
            retained_drivers: 1000,
            retained_apps: 1000,
            spread_out: true,
            max_waiting: 10_000,
            recovery_timeout: Duration::from_secs(20),
            public_url: None,
        }
    }
}

impl MasterConfig {
    pub fn validate(&self) -> Result<()> {
        if self.secret.is_none() && !self.insecure {
            return Err(Error::Config(
                "refusing to start without a shared secret: set HEARTH_SECRET or \
                 HEARTH_SECRET_FILE (or --secret-file), or pass --insecure to run \
                 unauthenticated on purpose"
                    .into(),
            ));
        }
        if self.worker_timeout < Duration::from_millis(100) {
            return Err(Error::Config(format!(
                "worker timeout: {} ms is too short; at least 100 ms",
                self.worker_timeout.as_millis()
            )));
        }
        if self.retained_drivers == 0 {
            return Err(Error::Config("retained drivers: must be at least 1".into()));
        }
        if self.max_waiting == 0 {
            return Err(Error::Config("max waiting: must be at least 1".into()));
        }
        if self.retained_apps == 0 {
            return Err(Error::Config("retained apps: must be at least 1".into()));
        }
        Ok(())
    }

    /// How often workers are told to send a heartbeat: a quarter of the timeout, like Spark.
    pub fn heartbeat_interval(&self) -> Duration {
        self.worker_timeout / 4
    }
}
