//! The master's two ports as bound: plain, or with TLS in front (handshakes already done).

use std::net::SocketAddr;

use tokio::net::TcpListener;

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

pub async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { what, addr, source })
}
