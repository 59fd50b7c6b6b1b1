//! Drivers' web UIs, reached by the master through this worker: on the master's `OpenTunnel`
//! the worker dials the driver's port on its own host and opens a `Tunnel` call back to the
//! master, then copies bytes both ways until either side closes.
//!
//! Tunnels use a connection to the master of their own, never the session's, so a UI that
//! streams without pause cannot delay heartbeats or orders.

use std::{sync::Arc, time::Duration};

use hearth_common::{
    auth::Secret,
    client::{self, AuthedChannel},
    proto::{OpenTunnel, TunnelData, worker_service_client::WorkerServiceClient},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::{OnceCell, mpsc},
};
use tokio_stream::wrappers::ReceiverStream;

/// How long the driver's port has to accept.
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the driver per message.
const PIECE: usize = 64 * 1024;
/// How long the driver may go on sending after the master's side has closed.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// The tunnels' own connection to the master, made on first use.
#[derive(Clone)]
pub struct TunnelClient {
    master_url: String,
    tls: client::ClientTls,
    secret: Option<Secret>,
    client: Arc<OnceCell<WorkerServiceClient<AuthedChannel>>>,
}

impl TunnelClient {
    pub fn new(master_url: String, tls: client::ClientTls, secret: Option<Secret>) -> Self {
        Self {
            master_url,
            tls,
            secret,
            client: Default::default(),
        }
    }

    async fn client(&self) -> crate::Result<WorkerServiceClient<AuthedChannel>> {
        let client = self
            .client
            .get_or_try_init(|| async {
                // Its own connection, with windows room enough for every tunnel to stall.
                let channel = client::endpoint(&self.master_url, &self.tls)?
                    .initial_stream_window_size(hearth_common::STREAM_WINDOW_BYTES)
                    .initial_connection_window_size(hearth_common::CONNECTION_WINDOW_BYTES)
                    .connect()
                    .await
                    .map_err(|cause| hearth_common::Error::Connect {
                        url: self.master_url.clone(),
                        cause,
                    })?;
                client::worker_client(channel, self.secret.as_ref())
            })
            .await?;
        Ok(client.clone())
    }

    /// Serves one `OpenTunnel`: dials the port (unless `refused` says why not) and copies bytes
    /// until both sides are done.
    pub async fn serve(&self, order: OpenTunnel, refused: Option<String>) {
        let tunnel_id = order.tunnel_id;
        let dialled = match refused {
            Some(why) => Err(why),
            None => dial(order.port).await,
        };
        let (tx, rx) = mpsc::channel::<TunnelData>(4);
        let first = TunnelData {
            tunnel_id,
            error: dialled.as_ref().err().cloned().unwrap_or_default(),
            data: Vec::new(),
        };
        if tx.send(first).await.is_err() {
            return;
        }
        let mut grpc = match self.client().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(tunnel_id, error = %e, "cannot open a tunnel to the master");
                return;
            }
        };
        let Ok(tcp) = dialled else {
            // The master learns why; nothing to copy.
            drop(tx);
            let _ = grpc.tunnel(ReceiverStream::new(rx)).await;
            return;
        };
        let mut inbound = match grpc.tunnel(ReceiverStream::new(rx)).await {
            Ok(r) => r.into_inner(),
            Err(status) => {
                tracing::debug!(tunnel_id, error = %status.message(), "tunnel refused");
                return;
            }
        };
        let (mut from_driver, mut to_driver) = tcp.into_split();
        let up = async move {
            let mut buf = vec![0u8; PIECE];
            loop {
                match from_driver.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let piece = TunnelData {
                            data: buf[..n].to_vec(),
                            ..Default::default()
                        };
                        if tx.send(piece).await.is_err() {
                            break;
                        }
                    }
                }
            }
            // Dropping `tx` ends the call's request stream: the master sees the end.
        };
        let down = async move {
            while let Ok(Some(piece)) = inbound.message().await {
                if to_driver.write_all(&piece.data).await.is_err() {
                    break;
                }
            }
            let _ = to_driver.shutdown().await;
        };
        // Once the master's side has closed, the driver gets a little while to finish its
        // answer; one that holds the connection open after that would keep the tunnel (and
        // one of the worker's few) forever.
        let mut up = tokio::spawn(up);
        tokio::select! {
            _ = &mut up => {}
            _ = down => {
                if tokio::time::timeout(CLOSE_GRACE, &mut up).await.is_err() {
                    up.abort();
                }
            }
        }
        tracing::debug!(tunnel_id, "tunnel closed");
    }
}

async fn dial(port: u32) -> Result<TcpStream, String> {
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("port {port} is not a TCP port"))?;
    match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(("127.0.0.1", port))).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(format!("connecting to 127.0.0.1:{port}: {e}")),
        Err(_) => Err(format!(
            "connecting to 127.0.0.1:{port}: no answer within {} s",
            DIAL_TIMEOUT.as_secs()
        )),
    }
}
