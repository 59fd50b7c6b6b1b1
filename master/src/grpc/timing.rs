//! A layer in front of every gRPC service that records each call's latency by method.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use crate::telemetry::Telemetry;

/// Times calls until their response headers: for unary calls the whole call, for streams the
/// time to open them.
#[derive(Debug, Clone)]
pub struct TimeRpcs {
    pub telemetry: Arc<Telemetry>,
}

impl<S> tower::Layer<S> for TimeRpcs {
    type Service = Timed<S>;

    fn layer(&self, inner: S) -> Timed<S> {
        Timed {
            inner,
            telemetry: self.telemetry.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Timed<S> {
    inner: S,
    telemetry: Arc<Telemetry>,
}

/// Answers that never reached a service: no such method, or no secret. Not timed, so
/// callers without the secret cannot fill the metrics with made-up method names.
fn refused<R>(response: &http::Response<R>) -> bool {
    response
        .headers()
        .get("grpc-status")
        .is_some_and(|s| s == "12" || s == "16")
}

impl<S, B, R> tower::Service<http::Request<B>> for Timed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let telemetry = self.telemetry.clone();
        let started = Instant::now();
        let call = self.inner.call(request);
        Box::pin(async move {
            let response = call.await;
            if response.as_ref().is_ok_and(|r| !refused(r)) {
                telemetry.observe_rpc(&path, started.elapsed());
            }
            response
        })
    }
}
