//! A Service in front of two masters, made as kube-proxy and a readiness probe make one: every
//! second each master's `/readyz` is asked (a probe with `periodSeconds: 1`), and each new
//! connection goes to the one that answered 200; a connection already open stays with its
//! master until either side closes it (as conntrack keeps it), and with no ready master a new
//! connection is refused. For masters run as processes on the host, where no Service reaches.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hearth_common::Shutdown;
use tokio::net::{TcpListener, TcpStream};

/// How often readiness is probed.
pub const PROBE_PERIOD: Duration = Duration::from_secs(1);

pub struct Service {
    pub addr: SocketAddr,
    /// The backend new connections go to now.
    pub ready: Arc<Mutex<Option<SocketAddr>>>,
    stop: Shutdown,
}

impl Service {
    /// Routes to `backends`: each master's gRPC address and its web `host:port`.
    pub async fn start(backends: Vec<(SocketAddr, String)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the service");
        let addr = listener.local_addr().expect("the service's address");
        let ready = Arc::new(Mutex::new(None));
        let stop = Shutdown::new();
        tokio::spawn(probe(backends, ready.clone(), stop.clone()));
        tokio::spawn(forward(listener, ready.clone(), stop.clone()));
        Self { addr, ready, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn probe(
    backends: Vec<(SocketAddr, String)>,
    ready: Arc<Mutex<Option<SocketAddr>>>,
    stop: Shutdown,
) {
    loop {
        let mut found = None;
        for (grpc, web) in &backends {
            let web = web.clone();
            let answer = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::task::spawn_blocking(move || super::try_http_get(&web, "/readyz")),
            )
            .await;
            if let Ok(Ok(Ok((200, _)))) = answer {
                found = Some(*grpc);
                break;
            }
        }
        *ready.lock().unwrap() = found;
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PROBE_PERIOD) => {}
        }
    }
}

async fn forward(listener: TcpListener, ready: Arc<Mutex<Option<SocketAddr>>>, stop: Shutdown) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let Ok((mut client, _)) = accepted else {
            continue;
        };
        let Some(backend) = *ready.lock().unwrap() else {
            continue;
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(backend).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
            }
        });
    }
}
