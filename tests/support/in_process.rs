//! A master and workers started inside the test's own process through the crates' `start`
//! functions, on loopback port 0, the way `hearth local` runs them. The same gRPC and HTTP as a
//! cluster of processes, and real driver and executor processes, but nothing to spawn, read
//! back or reap for the master and workers themselves: for behaviour where the process
//! boundary is not the point. Dropping it shuts everything down.

use std::{net::SocketAddr, time::Duration};

use hearth_common::{Shutdown, auth::Secret, client::Client, proto::WorkerState};
use hearth_master::MasterConfig;
use hearth_worker::{RunningWorker, WorkerConfig};

use super::{connect, json_at, wait_app_at, wait_for};

const SECRET: &str = "in-process-secret-7c1d";

pub struct InProcess {
    pub url: String,
    /// `host:port` of the web UI.
    pub web: String,
    pub workers: Vec<RunningWorker>,
    dir: tempfile::TempDir,
    /// Cancelled on drop: the master and every worker stop.
    shutdown: Shutdown,
}

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

impl InProcess {
    /// A master with the default settings changed by `settings`.
    pub async fn start(settings: impl FnOnce(&mut MasterConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = MasterConfig {
            grpc_addr: loopback(),
            web_addr: loopback(),
            secret: Some(Secret::new(SECRET).expect("secret")),
            state_dir: dir.path().join("state"),
            ..Default::default()
        };
        settings(&mut config);
        let shutdown = Shutdown::new();
        let master = hearth_master::start(config, shutdown.clone())
            .await
            .expect("start the master");
        let (url, web) = (master.url.clone(), master.web_addr.to_string());
        // The master's parts run on this test's runtime until `shutdown`.
        tokio::spawn(master.wait());
        Self {
            url,
            web,
            workers: Vec::new(),
            dir,
            shutdown,
        }
    }

    /// Starts a worker offering `cores` and `memory_mb` and waits until the master lists it
    /// ALIVE; returns its id.
    pub async fn add_worker(&mut self, cores: u32, memory_mb: u64) -> String {
        let n = self.workers.len();
        let worker = hearth_worker::start(
            WorkerConfig {
                master_url: self.url.clone(),
                secret: Some(Secret::new(SECRET).expect("secret")),
                cores: Some(cores),
                memory_mb: Some(memory_mb),
                host: Some("127.0.0.1".into()),
                name: Some(format!("w{n}")),
                web_addr: loopback(),
                work_dir: self.dir.path().join(format!("work-{n}")),
                kill_grace: Duration::from_secs(1),
                decommission_grace: Duration::ZERO,
                // The test binary is not `hearth`: the real one keeps the processes.
                keeper: Some(env!("CARGO_BIN_EXE_hearth-keeper").into()),
                ..Default::default()
            },
            self.shutdown.clone(),
        )
        .await
        .expect("start a worker");
        let id = worker.worker_id.clone();
        self.workers.push(worker);
        let client = self.client().await;
        wait_for(&format!("{id} ALIVE"), Duration::from_secs(10), || {
            let client = client.clone();
            let id = id.clone();
            async move {
                let workers = client.workers().await.ok()?;
                workers
                    .iter()
                    .any(|w| w.id == id && w.state == WorkerState::Alive as i32)
                    .then_some(())
            }
        })
        .await;
        id
    }

    pub async fn client(&self) -> Client {
        connect(&self.url, Some(SECRET), None).await
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        json_at(&self.web, path)
    }

    /// Waits until `/api/v1/apps/{id}` satisfies `check`, returning it.
    pub async fn wait_app(
        &self,
        id: &str,
        what: &str,
        limit: Duration,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        wait_app_at(&self.web, id, what, limit, check).await
    }
}

impl Drop for InProcess {
    /// Stops the master and the workers, and waits (up to 15 s) until the workers have killed
    /// what they ran, so no driver outlives the test, failed or not. Needs the multi-threaded
    /// runtime (`#[tokio::test(flavor = "multi_thread")]`) to wait inside a drop.
    fn drop(&mut self) {
        self.shutdown.cancel();
        let workers = std::mem::take(&mut self.workers);
        let handle = tokio::runtime::Handle::current();
        assert_eq!(
            handle.runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread,
            "InProcess needs #[tokio::test(flavor = \"multi_thread\")]"
        );
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                // Each worker is stopping already; waiting for them in turn takes as long as
                // the slowest.
                let stopped = async {
                    for worker in workers {
                        worker.wait().await;
                    }
                };
                if tokio::time::timeout(Duration::from_secs(15), stopped)
                    .await
                    .is_err()
                {
                    eprintln!("in-process workers did not stop within 15 s");
                }
            })
        });
    }
}
