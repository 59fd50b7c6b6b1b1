//! The master's settings as a plain struct, so tests and `hearth local` build it without clap.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use hearth_common::auth::Secret;

use crate::error::{Error, Result};

// The defaults, here once for both `MasterConfig::default()` and `hearth master`'s flags.
pub const DEFAULT_BIND: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
pub const DEFAULT_GRPC_PORT: u16 = 7077;
pub const DEFAULT_WEBUI_PORT: u16 = 8080;
pub const DEFAULT_STATE_DIR: &str = "./hearth-state";
pub const DEFAULT_WORKER_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_RETAINED_DRIVERS: usize = 1000;
pub use crate::store::DEFAULT_RETAINED_HISTORY;
pub const DEFAULT_RETAINED_APPS: usize = 1000;
pub const DEFAULT_SPREAD_OUT: bool = true;
pub const DEFAULT_RECOVERY_TIMEOUT: Duration = Duration::from_secs(20);
pub const DEFAULT_MAX_WAITING: usize = 10_000;
pub const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Connections the UI port keeps open at most: browsers, probes, scripts. Well under a common
/// open-file limit of 1024, with the gRPC port and the state file beside it.
pub const DEFAULT_UI_MAX_CONNECTIONS: usize = 512;
/// Heartbeats a second asked of the whole cluster by default: 10,000 workers heartbeat every
/// 10 s and are held to 40 s (as Kubernetes holds its nodes), a few per cent of a core.
pub const DEFAULT_MAX_HEARTBEAT_RATE: u32 = 1_000;
/// The longest heartbeat interval a large cluster is asked for (a worker takes no longer).
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(60);
/// How long the head of a queue waits for room before it reserves the worker where it fits
/// first.
pub const DEFAULT_RESERVE_AFTER: Duration = Duration::from_secs(120);
/// The half-life of the recent use that fair shares count besides the current.
pub const DEFAULT_USAGE_HALF_LIFE: Duration = Duration::from_secs(600);
/// The queue work goes to when none is named.
pub use crate::schedule::DEFAULT_QUEUE;

#[derive(Debug, Clone)]
pub struct MasterConfig {
    /// gRPC (workers and clients); port [`DEFAULT_GRPC_PORT`] by default.
    pub grpc_addr: SocketAddr,
    /// Web UI and JSON; port [`DEFAULT_WEBUI_PORT`] by default.
    pub web_addr: SocketAddr,
    pub secret: Option<Secret>,
    /// The secret being replaced: accepted too until the master restarts without it.
    pub previous_secret: Option<Secret>,
    /// Run without a secret; refused unless set on purpose.
    pub insecure: bool,
    pub state_dir: PathBuf,
    /// The queues file (YAML), watched for changes; without one, the `default` queue alone.
    pub queues_file: Option<PathBuf>,
    /// A worker not heard from for this long is declared DEAD.
    pub worker_timeout: Duration,
    /// The most heartbeats a second the whole cluster is asked for: beyond `4 ×` this many
    /// workers, each heartbeats less often than a quarter of the timeout, and the timeout each
    /// is held to grows with its interval. 0: no bound.
    pub max_heartbeat_rate: u32,
    /// Completed drivers kept in memory for the UI and API.
    pub retained_drivers: usize,
    /// Older completed drivers kept in the state file's history.
    pub retained_history: u64,
    /// Ended applications kept for the UI and API.
    pub retained_apps: usize,
    /// After a restart, how long the master waits for the workers it knew before declaring
    /// the missing ones DEAD. Longer than a worker's longest reconnect back-off (10 s).
    pub recovery_timeout: Duration,
    /// Most drivers waiting for a slot; submissions beyond it are refused (RESOURCE_EXHAUSTED).
    pub max_waiting: usize,
    /// How long the head of a queue waits for room before it reserves a worker.
    pub reserve_after: Duration,
    /// Fair shares are the mean of what a queue holds now and what it held recently, with
    /// this half-life; zero: what it holds now only.
    pub usage_half_life: Duration,
    /// Deal executors round-robin over workers (Spark's `spreadOut`); false fills each worker
    /// before the next.
    pub spread_out: bool,
    /// The URL clients use, shown in the UI and `/json/`; derived from the gRPC address if unset.
    pub public_url: Option<String>,
    /// Serve gRPC and the web UI over TLS with this certificate; plain when unset.
    pub tls: Option<crate::tls::TlsFiles>,
    pub ui: UiConfig,
    /// How often cluster use is sampled for the UI's chart; the last hour is kept.
    pub sample_interval: Duration,
    /// The most bytes of shipped logs kept, all together; the least recently written go first.
    pub kept_logs_bytes: u64,
    /// `--autoscale`: the master sizes its worker Deployment; `None`: off.
    pub autoscale: Option<AutoscaleConfig>,
    /// `--lease`: leader election and a standby; `None`: a single master.
    pub ha: Option<crate::ha::HaConfig>,
}

/// How the web UI behaves for people who reach port 8080.
#[derive(Debug, Clone)]
pub struct UiConfig {
    /// Show kill buttons; a kill still needs the shared secret typed in.
    pub kill: bool,
    /// Every page and JSON endpoint asks for the secret (basic auth or bearer token); the
    /// probes stay open.
    pub auth: bool,
    /// Prefix of every link, for an ingress that serves the UI under a sub-path: empty, or
    /// `/a/b` without a trailing slash.
    pub base_path: String,
    /// Most connections open on the UI port; at the cap the oldest stalled one is closed.
    pub max_connections: usize,
}

impl Default for UiConfig {
    fn default() -> Self {
        Self {
            kill: false,
            auth: false,
            base_path: String::new(),
            max_connections: DEFAULT_UI_MAX_CONNECTIONS,
        }
    }
}

/// The chart covers this much time: an hour, in milliseconds as timestamps are.
pub const CHART_WINDOW_MS: i64 = 3_600_000;
const CHART_WINDOW: Duration = Duration::from_millis(CHART_WINDOW_MS as u64);

impl Default for MasterConfig {
    fn default() -> Self {
        Self {
            grpc_addr: SocketAddr::new(DEFAULT_BIND, DEFAULT_GRPC_PORT),
            web_addr: SocketAddr::new(DEFAULT_BIND, DEFAULT_WEBUI_PORT),
            secret: None,
            previous_secret: None,
            insecure: false,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            queues_file: None,
            reserve_after: DEFAULT_RESERVE_AFTER,
            usage_half_life: DEFAULT_USAGE_HALF_LIFE,
            worker_timeout: DEFAULT_WORKER_TIMEOUT,
            max_heartbeat_rate: DEFAULT_MAX_HEARTBEAT_RATE,
            retained_drivers: DEFAULT_RETAINED_DRIVERS,
            retained_history: crate::store::DEFAULT_RETAINED_HISTORY,
            retained_apps: DEFAULT_RETAINED_APPS,
            spread_out: DEFAULT_SPREAD_OUT,
            max_waiting: DEFAULT_MAX_WAITING,
            recovery_timeout: DEFAULT_RECOVERY_TIMEOUT,
            public_url: None,
            tls: None,
            ui: UiConfig::default(),
            sample_interval: DEFAULT_SAMPLE_INTERVAL,
            kept_logs_bytes: crate::kept_logs::DEFAULT_LIMIT_BYTES,
            autoscale: None,
            ha: None,
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
        if let Some(ha) = &self.ha {
            ha.validate().map_err(Error::Config)?;
            if self.tls.is_some() {
                return Err(Error::Config(
                    "--lease with --tls-cert: a standby master does not serve TLS yet; run the pair without TLS behind a TLS ingress".into(),
                ));
            }
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
        if self.ui.max_connections == 0 {
            return Err(Error::Config(
                "ui max connections: must be at least 1".into(),
            ));
        }
        if self.secret.is_none() && self.previous_secret.is_some() {
            return Err(Error::Config(
                "previous secret: only accepted beside a current secret".into(),
            ));
        }
        if self.secret.is_none() && (self.ui.kill || self.ui.auth) {
            return Err(Error::Config(
                "ui kill / ui auth: both check the shared secret, and none is set".into(),
            ));
        }
        let base_path = ui_base_path(&self.ui.base_path)?;
        if base_path != self.ui.base_path {
            return Err(Error::Config(format!(
                "ui base path {:?}: write it as {base_path:?}",
                self.ui.base_path
            )));
        }
        if self.sample_interval < Duration::from_millis(100) || self.sample_interval > CHART_WINDOW
        {
            return Err(Error::Config(format!(
                "sample interval: {} ms is outside 100 ms to one hour",
                self.sample_interval.as_millis()
            )));
        }
        Ok(())
    }

    /// Samples the chart keeps: an hour's worth.
    pub fn samples_kept(&self) -> usize {
        let n = CHART_WINDOW.as_millis() / self.sample_interval.as_millis().max(1);
        usize::try_from(n).unwrap_or(usize::MAX).max(1) + 1
    }

    /// What checks a presented secret: the current one, and the previous one during a rotation.
    pub fn secret_check(&self) -> hearth_common::auth::CheckSecret {
        hearth_common::auth::CheckSecret::with_previous(
            self.secret.clone(),
            self.previous_secret.clone(),
        )
    }

    /// How often workers are told to send a heartbeat: a quarter of the timeout, like Spark.
    pub fn heartbeat_interval(&self) -> Duration {
        self.worker_timeout / 4
    }

    /// How often each of `workers` is asked to heartbeat: a quarter of the timeout, or less
    /// often once the whole cluster would send more than [`Self::max_heartbeat_rate`] a second
    /// (each costs the master some 20 µs of a core, whatever the size of the cluster); at most
    /// once a minute.
    pub fn heartbeat_interval_for(&self, workers: usize) -> Duration {
        let base = self.heartbeat_interval();
        if self.max_heartbeat_rate == 0 {
            return base;
        }
        let spread = Duration::from_secs_f64(workers as f64 / f64::from(self.max_heartbeat_rate));
        base.max(spread).min(MAX_HEARTBEAT_INTERVAL.max(base))
    }
}

/// First segments of the paths the master serves at its root: a base path may not start
/// with one, or its routes would shadow them.
/// Paths the master serves at its root: a base path may not be one of them, lie inside one,
/// or be a prefix of one, or its pages would be confused with the master's own.
const RESERVED_PATHS: [&str; 12] = [
    "/json",
    "/api/v1/workers",
    "/api/v1/drivers",
    "/api/v1/apps",
    "/api/v1/queues",
    "/metrics",
    "/healthz",
    "/readyz",
    "/workers",
    "/drivers",
    "/apps",
    "/queues",
];

/// Checks and normalises a base path for the UI: `""` and `"/"` mean none; otherwise it
/// starts with `/`, has no trailing `/`, and holds only characters safe in a URL path and
/// in HTML unescaped.
pub fn ui_base_path(raw: &str) -> Result<String> {
    let trimmed = raw.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    let bad = |why: &str| Err(Error::Config(format!("ui base path {raw:?}: {why}")));
    if !trimmed.starts_with('/') {
        return bad("must start with /");
    }
    if trimmed.contains("//") {
        return bad("has an empty segment (//)");
    }
    if trimmed.split('/').any(|seg| seg == "." || seg == "..") {
        return bad("has a . or .. segment");
    }
    // ':' for kubectl's service proxy path (`.../services/hearth-webui:8080/proxy`).
    if let Some(c) = trimmed
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.' | '~' | ':')))
    {
        return bad(&format!(
            "{c:?} is not allowed (letters, digits, / - _ . ~ : only)"
        ));
    }
    if trimmed.len() > 200 {
        return bad("longer than 200 characters");
    }
    let within =
        |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
    if let Some(own) = RESERVED_PATHS
        .iter()
        .find(|own| within(own, trimmed) || within(trimmed, own))
    {
        return bad(&format!(
            "{own} is a path the master serves itself; choose another prefix"
        ));
    }
    Ok(trimmed.to_string())
}

/// `--autoscale` and its bounds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoscaleConfig {
    pub namespace: String,
    pub deployment: String,
    pub min_workers: u32,
    pub max_workers: u32,
    pub scale_down_idle: Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_spread_out_only_past_the_rate_bound() {
        let config = MasterConfig::default();
        let every = |workers| config.heartbeat_interval_for(workers);
        // Up to 4 × the rate, a quarter of the timeout, as always.
        assert_eq!(every(1), Duration::from_millis(2_500));
        assert_eq!(every(2_500), Duration::from_millis(2_500));
        // Beyond, the cluster sends the bound: 10,000 workers every 10 s.
        assert_eq!(every(5_000), Duration::from_secs(5));
        assert_eq!(every(10_000), Duration::from_secs(10));
        assert_eq!(every(1_000_000), MAX_HEARTBEAT_INTERVAL);
        let unbounded = MasterConfig {
            max_heartbeat_rate: 0,
            ..MasterConfig::default()
        };
        assert_eq!(
            unbounded.heartbeat_interval_for(10_000),
            Duration::from_millis(2_500)
        );
    }

    #[test]
    fn clients_look_for_the_master_on_its_default_port() {
        assert_eq!(
            hearth_common::client::DEFAULT_MASTER_URL,
            format!("http://127.0.0.1:{DEFAULT_GRPC_PORT}")
        );
    }

    #[test]
    fn base_paths_are_normalised_or_refused_with_the_reason() {
        assert_eq!(ui_base_path("").ok(), Some(String::new()));
        assert_eq!(ui_base_path("/").ok(), Some(String::new()));
        assert_eq!(ui_base_path("/a/b/").ok(), Some("/a/b".into()));
        assert_eq!(
            ui_base_path("/hearth-ui_1.x~").ok(),
            Some("/hearth-ui_1.x~".into())
        );
        // kubectl proxy's path to the UI Service.
        let kubectl = "/api/v1/namespaces/hearth/services/hearth-webui:8080/proxy";
        assert_eq!(ui_base_path(kubectl).ok(), Some(kubectl.into()));
        for (raw, why) in [
            ("hearth", "must start with /"),
            ("/a//b", "empty segment"),
            ("/a/../b", ".. segment"),
            ("/a\"b", "is not allowed"),
            ("/a?x=1", "is not allowed"),
            ("/json", "serves itself"),
            ("/api/v1", "serves itself"),
            ("/api", "serves itself"),
            ("/api/v1/drivers/x", "serves itself"),
            ("/metrics/", "serves itself"),
            ("/a b", "is not allowed"),
        ] {
            let err = ui_base_path(raw)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.contains("ui base path") && err.contains(why),
                "{raw}: {err}"
            );
        }
    }
}
