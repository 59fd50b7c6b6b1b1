//! The master's two ports as bound: plain, or with TLS in front (handshakes already done).

use std::{net::SocketAddr, time::Duration};

use tokio::net::{TcpListener, TcpStream};

use crate::{
    error::{Error, Result},
    tls,
};

/// A bound port, with or without TLS in front.
pub enum Listener {
    Plain(TcpListener),
    /// Connections whose TLS handshake is done.
    Tls(tokio::sync::mpsc::Receiver<(tls::TlsStream, SocketAddr)>),
}

/// Silence on a connection after which the kernel starts probing its peer.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// How long a connection may go without word from its peer once probed, or with data it has
/// not acknowledged, before it is dropped.
const UNANSWERED_FOR: Duration = Duration::from_secs(40);

/// Settings for an accepted connection (gRPC's, and the UI's under TLS): no Nagle delay (small answers would wait out
/// delayed ACKs, 40 ms), and a peer that vanished (its node gone, a partition) dropped after
/// [`UNANSWERED_FOR`] by the kernel's keepalive. HTTP/2 keepalive pings would find it too, but
/// each connection's ping timer wakes the master every interval, heard from or not: 333 wakeups
/// a second at 10,000 workers.
pub fn tune_accepted(stream: &TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "TCP_NODELAY not set on an accepted connection");
    }
    let socket = socket2::SockRef::from(stream);
    let probes = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(Duration::from_secs(5))
        .with_retries(2);
    if let Err(e) = socket
        .set_tcp_keepalive(&probes)
        .and_then(|()| socket.set_tcp_user_timeout(Some(UNANSWERED_FOR)))
    {
        tracing::debug!(error = %e, "TCP keepalive not set on an accepted connection");
    }
}

pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}

/// Raises this process's soft limit on open files to its hard limit, so the ports hold as many
/// connections as the system lets this process have; returns the (soft, hard) limits now.
pub fn raise_open_file_limit() -> std::io::Result<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(std::io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(std::io::Error::from)?;
    }
    Ok((soft.max(hard), hard))
}
