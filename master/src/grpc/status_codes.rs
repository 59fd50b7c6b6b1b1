//! The status of a request no service could read, as the gRPC spec and this project's rule for
//! bad input say. tonic answers a message over the size limit with OUT_OF_RANGE and one that is
//! not a valid protobuf message with INTERNAL; here they become RESOURCE_EXHAUSTED and
//! INVALID_ARGUMENT, with the message naming the field (`request`) and the reason.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use tonic::{Code, Status};

#[derive(Debug, Clone, Copy, Default)]
pub struct SpecStatusCodes;

impl<S> tower::Layer<S> for SpecStatusCodes {
    type Service = Rewritten<S>;

    fn layer(&self, inner: S) -> Rewritten<S> {
        Rewritten { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Rewritten<S> {
    inner: S,
}

/// The status a refused request should have had, if tonic's was one of the two above.
fn corrected(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::OutOfRange if message.contains("message length too large") => Some(
            Status::resource_exhausted(format!("request: too large: {message}")),
        ),
        Code::Internal if message.starts_with("failed to decode") => Some(
            Status::invalid_argument(format!("request: not a valid message: {message}")),
        ),
        _ => None,
    }
}

impl<S, B, R> tower::Service<http::Request<B>> for Rewritten<S>
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
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            // Refused before any service ran: the status is in the headers (trailers-only).
            if let Some(better) =
                Status::from_header_map(response.headers()).and_then(|s| corrected(&s))
            {
                let headers = response.headers_mut();
                headers.remove("grpc-status-details-bin");
                // Only fails on a message that cannot be a header, which these are not.
                let _ = better.add_header(headers);
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_two_refusals_change() {
        let big = Status::out_of_range("decoded message length too large: found 9 bytes");
        assert_eq!(
            corrected(&big).map(|s| s.code()),
            Some(Code::ResourceExhausted)
        );
        let bad = Status::internal("failed to decode Protobuf message: invalid wire type");
        let fixed = corrected(&bad).expect("rewritten");
        assert_eq!(fixed.code(), Code::InvalidArgument);
        assert!(fixed.message().starts_with("request: not a valid message"));
        assert!(corrected(&Status::internal("the store failed")).is_none());
        assert!(corrected(&Status::out_of_range("other")).is_none());
    }
}
