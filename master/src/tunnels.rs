//! Tunnels to drivers' web UIs: the master never dials a worker pod, so for each browser
//! connection it asks the driver's worker (over the worker's session) to dial the driver's UI
//! port on its own host and open a `Tunnel` call back; the bytes then flow through that call.
//!
//! A worker's tunnels ride on a connection of their own, and each has HTTP/2's flow control,
//! so a UI that streams forever slows only itself; a worker has at most
//! [`crate::links::TUNNELS_PER_WORKER`] open at once.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use hearth_common::proto::{MasterMessage, OpenTunnel, TunnelData, master_message::Msg};
use ring::rand::SecureRandom;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, DuplexStream},
    sync::{OwnedSemaphorePermit, mpsc, oneshot},
};
use tonic::{Status, Streaming};

use crate::{
    error::{Error, Result},
    links::Links,
};

/// How long a worker has to dial the driver and open the tunnel.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes buffered between the HTTP side and the tunnel, each way.
const BUFFER: usize = 64 * 1024;

/// The worker's side of an opened tunnel, handed to whoever asked for it.
#[derive(Debug)]
pub struct Opened {
    /// Set when the worker could not reach the driver's port.
    pub error: String,
    pub inbound: Streaming<TunnelData>,
    pub outbound: mpsc::Sender<Result<TunnelData, Status>>,
}

/// Tunnels asked for and not yet opened by their worker, by id.
#[derive(Debug, Clone, Default)]
pub struct Tunnels {
    pending: Arc<Mutex<HashMap<u64, oneshot::Sender<Opened>>>>,
}

impl Tunnels {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Opened>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands a worker's `Tunnel` call to the request waiting for it; `false` if none is (the
    /// request gave up, or the id was never asked for).
    pub fn arrived(&self, tunnel_id: u64, opened: Opened) -> bool {
        match self.lock().remove(&tunnel_id) {
            Some(waiter) => waiter.send(opened).is_ok(),
            None => false,
        }
    }

    /// Asks `worker_id` to connect to `port` for `driver_id` and waits for the tunnel; the
    /// returned stream carries the bytes to and from the driver's port.
    pub async fn open(
        &self,
        links: &Links,
        worker_id: &str,
        driver_id: &str,
        port: u32,
    ) -> Result<DuplexStream> {
        let link = links.get(worker_id).ok_or_else(|| {
            Error::Unavailable(format!("{driver_id}'s worker {worker_id} is not connected"))
        })?;
        let Ok(permit) = link.tunnels.clone().try_acquire_owned() else {
            return Err(Error::ResourceExhausted(format!(
                "{worker_id} has {} driver UI connections open already; try again",
                crate::links::TUNNELS_PER_WORKER
            )));
        };
        // Unguessable, so no other caller with a worker's credential can take the tunnel.
        let mut bytes = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| Error::Internal("no randomness for a tunnel id".into()))?;
        let tunnel_id = u64::from_le_bytes(bytes);
        let (tx, rx) = oneshot::channel();
        self.lock().insert(tunnel_id, tx);
        let order = MasterMessage {
            msg: Some(Msg::OpenTunnel(OpenTunnel {
                tunnel_id,
                driver_id: driver_id.to_string(),
                port,
            })),
            epoch: 0,
        };
        // Not `Link::send`: a full queue refuses this connection but does not cut the worker off.
        if link.orders.try_send(Box::new(order)).is_err() {
            self.lock().remove(&tunnel_id);
            return Err(Error::Unavailable(format!(
                "{worker_id} is not taking orders now; try again"
            )));
        }
        let opened = tokio::time::timeout(OPEN_TIMEOUT, rx).await;
        self.lock().remove(&tunnel_id);
        let opened = match opened {
            Ok(Ok(opened)) => opened,
            Ok(Err(_)) => {
                return Err(Error::Unavailable(format!(
                    "{worker_id} went away before opening {driver_id}'s UI"
                )));
            }
            Err(_) => {
                return Err(Error::Unavailable(format!(
                    "{worker_id} did not open {driver_id}'s UI within {} s",
                    OPEN_TIMEOUT.as_secs()
                )));
            }
        };
        if !opened.error.is_empty() {
            return Err(Error::Unavailable(format!(
                "{driver_id}'s UI on port {port} is not answering: {}",
                opened.error
            )));
        }
        tracing::debug!(
            worker_id,
            driver_id,
            tunnel_id,
            port,
            "driver UI tunnel open"
        );
        Ok(pump(opened, permit))
    }
}

/// Copies between one end of an in-memory pipe and the tunnel call, and returns the other end.
fn pump(opened: Opened, permit: OwnedSemaphorePermit) -> DuplexStream {
    let (near, far) = tokio::io::duplex(BUFFER);
    let (mut from_http, mut to_http) = tokio::io::split(far);
    let Opened {
        mut inbound,
        outbound,
        ..
    } = opened;
    tokio::spawn(async move {
        let mut buf = vec![0u8; BUFFER];
        loop {
            match from_http.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let data = TunnelData {
                        data: buf[..n].to_vec(),
                        ..Default::default()
                    };
                    if outbound.send(Ok(data)).await.is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `outbound` ends the call's answer: the worker closes its side to the driver.
    });
    tokio::spawn(async move {
        let _permit = permit;
        while let Ok(Some(piece)) = inbound.message().await {
            if to_http.write_all(&piece.data).await.is_err() {
                break;
            }
        }
        let _ = to_http.shutdown().await;
    });
    near
}
