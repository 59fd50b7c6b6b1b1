//! Settings of a connection the master accepted: how small answers leave, and how a peer that
//! vanished is found.

use std::time::Duration;

use tokio::net::TcpStream;

/// Silence on a connection after which the kernel starts probing its peer.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// How long a connection may go without word from its peer once probed, or with data it has
/// not acknowledged, before it is dropped.
const UNANSWERED_FOR: Duration = Duration::from_secs(40);

/// Settings for an accepted connection (gRPC's, and the UI's under TLS): no Nagle delay (small
/// answers would wait out delayed ACKs, 40 ms), and a peer that vanished (its node gone, a
/// partition) dropped after [`UNANSWERED_FOR`] by the kernel's keepalive. HTTP/2 keepalive pings
/// would find it too, but each connection's ping timer wakes the master every interval, heard
/// from or not: 333 wakeups a second at 10,000 workers.
pub fn tune(stream: &TcpStream) {
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
