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
