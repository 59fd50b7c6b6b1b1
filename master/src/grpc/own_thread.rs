//! The gRPC port on a thread and runtime of its own.
//!
//! Most of what a large cluster sends the master is heartbeats: each is one read on one of
//! thousands of connections. On the master's multi-threaded runtime, the task a read wakes is
//! often run by the other thread, so most heartbeats cost a futex wakeup and a context switch
//! besides the read (at 10,000 workers, half the master's CPU). One thread polling every
//! connection takes each heartbeat where it arrived; the state actor has a thread of its own
//! (`actor`), and the web UI keeps the main runtime.

use hearth_common::Shutdown;
use tokio::{net::TcpListener, sync::oneshot};
use tokio_rustls::TlsAcceptor;

use crate::{
    actor::MasterHandle,
    error::{Error, Result},
    listen::Listener,
};

/// Serves gRPC on `listener` (behind `tls` when given) from a thread of its own until
/// `shutdown`; returns when that server stops. Its connections, and the TLS handshakes, belong
/// to that thread's runtime and end with it.
pub async fn serve(
    handle: MasterHandle,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
) -> Result<()> {
    let listener = listener
        .into_std()
        .map_err(|e| Error::Internal(format!("gRPC port: {e}")))?;
    let (done_tx, done_rx) = oneshot::channel();
    std::thread::Builder::new()
        .name("hearth-grpc".into())
        .spawn(move || {
            let _ = done_tx.send(run(handle, listener, tls, shutdown));
        })
        .map_err(|e| Error::Internal(format!("cannot start the gRPC thread: {e}")))?;
    done_rx
        .await
        .unwrap_or_else(|_| Err(Error::Internal("the gRPC thread panicked".into())))
}

fn run(
    handle: MasterHandle,
    listener: std::net::TcpListener,
    tls: Option<TlsAcceptor>,
    shutdown: Shutdown,
) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the gRPC runtime: {e}")))?;
    let served = runtime.block_on(async move {
        let listener = TcpListener::from_std(listener)
            .map_err(|e| Error::Internal(format!("gRPC port: {e}")))?;
        let listener = match tls {
            Some(acceptor) => {
                Listener::Tls(crate::tls::incoming(listener, acceptor, shutdown.clone()))
            }
            None => Listener::Plain(listener),
        };
        super::serve(handle, listener, shutdown).await
    });
    // The port's connections end here; a page read from the history on a blocking thread is
    // not waited for past this.
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    served
}

/// How long a stopping gRPC port waits for its blocking reads.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
