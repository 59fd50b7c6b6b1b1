//! An HTTP port's connections, kept within bounds so slow or hostile clients cannot take the
//! port down for everyone else (the probes among them): the master's UI port and the worker's
//! probe port.
//!
//! - A connection that has not sent a whole request within [`HEADER_TIMEOUT`] of opening is
//!   closed (whatever it sent: nothing, half an HTTP/1 request or an HTTP/2 preface); a request
//!   body has as long to arrive.
//! - At most `max` connections are open. One more arriving at the cap makes room by closing the
//!   oldest connection that has not yet sent a whole request (a stalled client), else the oldest
//!   idle one; a new client is refused only while every connection has a request in flight.
//! - When the process runs out of file descriptors, the oldest connection is closed and accepting
//!   goes on, instead of the accept loop failing or spinning.
//! - On shutdown the answers under way finish (for up to [`HEADER_TIMEOUT`]) before `serve`
//!   returns.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::Router;

use crate::Shutdown;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection of any kind the port accepts.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// What is known of one open connection, so one can be chosen to close.
struct Open {
    opened: tokio::time::Instant,
    /// Set when its first request's headers were read.
    requested: Arc<AtomicBool>,
    /// Requests being answered on it now.
    in_flight: Arc<AtomicUsize>,
    /// Cancelled to close it.
    shed: CancellationToken,
}

/// The open connections, oldest first.
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<BTreeMap<u64, Open>>>);

impl Registry {
    /// Closes every connection that has been open for `HEADER_TIMEOUT` without sending a whole
    /// request.
    fn close_stalled(&self) {
        let now = tokio::time::Instant::now();
        self.lock().retain(|_, c| {
            let stalled = !c.requested.load(Ordering::Relaxed) && now - c.opened >= HEADER_TIMEOUT;
            if stalled {
                c.shed.cancel();
            }
            !stalled
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Open>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes one connection to make room: the oldest that never sent a whole request, else
    /// the oldest with nothing in flight, else (`any`) the oldest. Whether one was closed.
    fn shed(&self, any: bool) -> bool {
        let mut open = self.lock();
        let pick = open
            .iter()
            .find(|(_, c)| !c.requested.load(Ordering::Relaxed))
            .or_else(|| {
                open.iter()
                    .find(|(_, c)| c.in_flight.load(Ordering::Relaxed) == 0)
            })
            .or_else(|| if any { open.iter().next() } else { None })
            .map(|(seq, _)| *seq);
        match pick.and_then(|seq| open.remove(&seq)) {
            Some(c) => {
                c.shed.cancel();
                true
            }
            None => false,
        }
    }
}

/// Serves `router` on every connection `listener` yields until `shutdown`, with at most `max`
/// open at once.
pub async fn serve<T: Io + 'static>(
    listener: Incoming<T>,
    router: Router,
    max: usize,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let registry = Registry::default();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let builder = Arc::new(builder);
    let mut incoming = listener;
    let tasks = tokio_util::task::TaskTracker::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut seq = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = sweep.tick() => {
                registry.close_stalled();
                continue;
            }
            accepted = incoming.next() => accepted,
        };
        let (io, peer) = match accepted {
            Some(Ok(conn)) => conn,
            Some(Err(e)) if is_out_of_descriptors(&e) => {
                // Close the oldest connection to make room, and go on accepting.
                let shed = registry.shed(true);
                tracing::warn!(error = %e, shed, "accept failed: out of file descriptors");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
            // A client gone before it was accepted: nothing to do.
            Some(Err(e)) => {
                tracing::debug!(error = %e, "accept failed");
                continue;
            }
            None => break,
        };
        if registry.lock().len() >= max && !registry.shed(false) {
            tracing::warn!(%peer, max, "connection refused: every connection is busy");
            continue;
        }
        seq += 1;
        let requested = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let shed = CancellationToken::new();
        registry.lock().insert(
            seq,
            Open {
                opened: tokio::time::Instant::now(),
                requested: requested.clone(),
                in_flight: in_flight.clone(),
                shed: shed.clone(),
            },
        );
        let service = router.clone().map_request(move |request| {
            requested.store(true, Ordering::Relaxed);
            request
        });
        // A body as slow as stalled headers ends the request (408) and frees the connection.
        let service = tower_http::timeout::RequestBodyTimeout::new(service, HEADER_TIMEOUT);
        let service = Counted {
            inner: service,
            in_flight,
        };
        let (builder, registry, shutdown) = (builder.clone(), registry.clone(), shutdown.clone());
        tasks.spawn(async move {
            let connection = builder.serve_connection_with_upgrades(
                TokioIo::new(io),
                TowerToHyperService::new(service),
            );
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                // Shed to make room, closed at once: it has nothing in flight, unless the
                // process ran out of descriptors and every connection had.
                _ = shed.cancelled() => {}
                _ = shutdown.cancelled() => {
                    // The master stopping: answers under way finish, then it closes.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(HEADER_TIMEOUT, connection).await;
                }
            }
            registry.lock().remove(&seq);
        });
    }
    // Answers under way finish (each connection closes gracefully on `shutdown`).
    tasks.close();
    let _ = tokio::time::timeout(HEADER_TIMEOUT, tasks.wait()).await;
    Ok(())
}

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    // EMFILE and ENFILE on Linux: out of descriptors for the process, or the whole system.
    matches!(e.raw_os_error(), Some(24 | 23))
}

/// Counts the requests in flight on one connection.
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    in_flight: Arc<AtomicUsize>,
}

impl<S, B> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Error = Infallible> + Send,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<S::Response, Infallible>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let in_flight = InFlight::new(self.in_flight.clone());
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await;
            drop(in_flight);
            response
        })
    }
}

/// One request in flight, counted until dropped: also when hyper drops the answer unfinished
/// (a client gone, an HTTP/2 stream reset).
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn new(count: Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Connections as they are accepted: from a plain listener, or already through a handshake
/// (TLS) elsewhere.
pub enum Incoming<T> {
    Plain(tokio::net::TcpListener),
    Accepted(tokio::sync::mpsc::Receiver<(T, SocketAddr)>),
}

impl<T: Io + 'static> Incoming<T> {
    /// The next connection; `None` once no more can come.
    async fn next(&mut self) -> Option<std::io::Result<(Box<dyn Io>, SocketAddr)>> {
        match self {
            Self::Plain(listener) => Some(listener.accept().await.map(|(stream, peer)| {
                // Small answers go out at once rather than after a delayed ACK.
                let _ = stream.set_nodelay(true);
                (Box::new(stream) as Box<dyn Io>, peer)
            })),
            Self::Accepted(accepted) => accepted
                .recv()
                .await
                .map(|(stream, peer)| Ok((Box::new(stream) as Box<dyn Io>, peer))),
        }
    }
}
