//! A bound on the memory that large gRPC requests take while they arrive.
//!
//! tonic buffers each message whole before decoding it, so every request just under the size
//! limit costs that much (and its decoded copy) until it is answered; a few clients sending
//! many at once would grow the master past its memory limit. Each client request body is read
//! through [`Budgeted`], which looks at the length prefix of every gRPC message: a message
//! larger than [`SMALL`] waits until it can take its size from a budget shared by the whole
//! port, and gives it back when the next message begins or the request ends (tonic has
//! decoded it by then), or, cut off, after [`ARRIVAL_LIMIT`]. Small messages never wait, and
//! workers' streams are not counted; h2's flow-control windows bound what a waiting request can
//! send meanwhile.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore};

/// Messages up to this size pass without taking from the budget.
pub const SMALL: u64 = 64 * 1024;

/// Bytes of large messages the port takes in at once: two of the largest.
pub const BUDGET_BYTES: u64 = 2 * hearth_common::MAX_MESSAGE_BYTES as u64;

/// The budget counts KiB, so it fits the semaphore's `u32` permits.
const UNIT: u64 = 1024;

/// A large message must arrive whole within this long of taking its share, or its request is
/// cut short: a client that claims a large message and sends it slowly (or never) cannot hold
/// the budget from everyone else.
pub const ARRIVAL_LIMIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Workers' streams are exempt: a worker's large messages (a registration, log pieces) must
/// never queue behind clients', or its heartbeats behind them would stall.
const EXEMPT: &str = "/hearth.v1.WorkerService/";

/// The layer: one budget for every request through it.
#[derive(Debug, Clone)]
pub struct DecodeBudget {
    budget: Arc<Semaphore>,
}

impl Default for DecodeBudget {
    fn default() -> Self {
        Self {
            budget: Arc::new(Semaphore::new((BUDGET_BYTES / UNIT) as usize)),
        }
    }
}

impl<S> tower::Layer<S> for DecodeBudget {
    type Service = Budget<S>;

    fn layer(&self, inner: S) -> Budget<S> {
        Budget {
            inner,
            budget: self.budget.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Budget<S> {
    inner: S,
    budget: Arc<Semaphore>,
}

impl<S, B> tower::Service<http::Request<B>> for Budget<S>
where
    S: tower::Service<http::Request<Budgeted<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let budget = (!request.uri().path().starts_with(EXEMPT)).then(|| self.budget.clone());
        self.inner
            .call(request.map(|body| Budgeted::new(body, budget)))
    }
}

type Acquiring = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A request body whose large messages take their size from the budget before they pass.
pub struct Budgeted<B> {
    inner: B,
    /// `None`: exempt.
    budget: Option<Arc<Semaphore>>,
    /// While a large message holds its share: when it must have arrived whole.
    arrival: Option<Pin<Box<tokio::time::Sleep>>>,
    framer: Framer,
    /// What the message passing now holds of the budget.
    permit: Option<OwnedSemaphorePermit>,
    /// A frame that starts a large message, held until the budget has room.
    waiting: Option<(Acquiring, Frame<Bytes>)>,
}

impl<B> Budgeted<B> {
    fn new(inner: B, budget: Option<Arc<Semaphore>>) -> Self {
        Self {
            inner,
            budget,
            arrival: None,
            framer: Framer::default(),
            permit: None,
            waiting: None,
        }
    }
}

impl<B> Body for Budgeted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let Some(budget) = this.budget.clone() else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        if let Some((acquiring, _)) = &mut this.waiting {
            let permit = std::task::ready!(acquiring.as_mut().poll(cx));
            this.permit = permit.ok();
            this.arrival = Some(Box::pin(tokio::time::sleep(ARRIVAL_LIMIT)));
            let frame = this.waiting.take().map(|(_, frame)| frame);
            return Poll::Ready(frame.map(Ok));
        }
        if this.permit.is_some()
            && this.framer.remaining > 0
            && let Some(arrival) = &mut this.arrival
            && arrival.as_mut().poll(cx).is_ready()
        {
            // Too slow: the request ends here (tonic refuses the cut message), and the share
            // goes back.
            tracing::warn!("a large gRPC message did not arrive within its time; request cut");
            this.permit = None;
            this.arrival = None;
            return Poll::Ready(None);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let Poll::Ready(Some(Ok(frame))) = polled else {
            if matches!(polled, Poll::Ready(None)) {
                this.permit = None;
                this.arrival = None;
            }
            return polled;
        };
        let Some(data) = frame.data_ref() else {
            return Poll::Ready(Some(Ok(frame)));
        };
        let starts = this.framer.feed(data);
        if starts.is_empty() {
            return Poll::Ready(Some(Ok(frame)));
        }
        // The message before is whole: what it held goes back.
        this.permit = None;
        this.arrival = None;
        let large: u64 = starts.iter().filter(|len| **len > SMALL).sum();
        if large == 0 {
            return Poll::Ready(Some(Ok(frame)));
        }
        let units = large.div_ceil(UNIT).min(BUDGET_BYTES / UNIT) as u32;
        match budget.clone().try_acquire_many_owned(units) {
            Ok(permit) => {
                this.permit = Some(permit);
                this.arrival = Some(Box::pin(tokio::time::sleep(ARRIVAL_LIMIT)));
                Poll::Ready(Some(Ok(frame)))
            }
            Err(_) => {
                let mut acquiring: Acquiring = Box::pin(budget.acquire_many_owned(units));
                match acquiring.as_mut().poll(cx) {
                    Poll::Ready(permit) => {
                        this.permit = permit.ok();
                        this.arrival = Some(Box::pin(tokio::time::sleep(ARRIVAL_LIMIT)));
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Poll::Pending => {
                        this.waiting = Some((acquiring, frame));
                        Poll::Pending
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.waiting.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Where the body stands in gRPC's framing: a 5-byte prefix (a flag, then the length, big
/// endian) before each message.
#[derive(Debug, Default)]
struct Framer {
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come.
    remaining: u64,
}

impl Framer {
    /// Walks `data`; returns the lengths of the messages whose prefix completed in it.
    fn feed(&mut self, mut data: &[u8]) -> Vec<u64> {
        let mut starts = Vec::new();
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = (self.remaining.min(data.len() as u64)) as usize;
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == 5 {
                let mut len = [0u8; 4];
                len.copy_from_slice(&self.prefix[1..5]);
                let len = u64::from(u32::from_be_bytes(len));
                starts.push(len);
                self.remaining = len;
                self.have = 0;
            }
        }
        starts
    }

    /// The last message has passed whole and no next one has begun.
    #[cfg(test)]
    fn between_messages(&self) -> bool {
        self.remaining == 0 && self.have == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(len: u32) -> Vec<u8> {
        let mut m = vec![0u8];
        m.extend_from_slice(&len.to_be_bytes());
        m.extend(std::iter::repeat_n(7u8, len as usize));
        m
    }

    #[test]
    fn prefixes_are_found_however_the_bytes_are_cut() {
        let mut all = message(3);
        all.extend(message(100_000));
        all.extend(message(0));
        all.extend(message(9));
        for cut in [1usize, 2, 3, 5, 7, 4096, all.len()] {
            let mut framer = Framer::default();
            let starts: Vec<u64> = all.chunks(cut).flat_map(|c| framer.feed(c)).collect();
            assert_eq!(starts, vec![3, 100_000, 0, 9], "chunks of {cut}");
            assert!(framer.between_messages());
        }
    }

    #[tokio::test]
    async fn a_large_message_waits_for_room_and_gives_it_back() {
        use http_body_util::{BodyExt, Full};
        let budget = Arc::new(Semaphore::new(200));
        // Another request holds all but 100 KiB.
        let held = budget
            .clone()
            .acquire_many_owned(100)
            .await
            .expect("permits");
        let body = Budgeted::new(
            Full::new(Bytes::from(message(150 * 1024))),
            Some(budget.clone()),
        );
        let read = tokio::spawn(async move { body.collect().await.map(|b| b.to_bytes().len()) });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!read.is_finished(), "150 KiB passed with 100 KiB of room");
        drop(held);
        let len = read.await.expect("task").expect("body");
        assert_eq!(len, 150 * 1024 + 5);
        assert_eq!(budget.available_permits(), 200, "all given back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_large_message_that_never_arrives_gives_its_share_back() {
        use http_body_util::{BodyExt, StreamBody};
        use tokio_stream::StreamExt;
        let budget = Arc::new(Semaphore::new(200));
        // A prefix claiming 150 KiB, ten bytes of it, then nothing, ever.
        let mut start = message(150 * 1024);
        start.truncate(15);
        let frames = tokio_stream::iter([Ok::<_, std::convert::Infallible>(Frame::data(
            Bytes::from(start),
        ))])
        .chain(tokio_stream::pending());
        let body = Budgeted::new(StreamBody::new(frames), Some(budget.clone()));
        let read = tokio::spawn(async move { body.collect().await.map(|b| b.to_bytes().len()) });
        tokio::time::sleep(ARRIVAL_LIMIT / 2).await;
        assert_eq!(
            budget.available_permits(),
            50,
            "150 KiB held while it arrives"
        );
        let len = read.await.expect("task").expect("body");
        assert_eq!(len, 15, "cut short after the limit");
        assert_eq!(budget.available_permits(), 200, "all given back");
    }

    #[tokio::test]
    async fn workers_streams_are_exempt() {
        use http_body_util::{BodyExt, Full};
        let body = Budgeted::new(Full::new(Bytes::from(message(300 * 1024))), None);
        let len = body.collect().await.expect("body").to_bytes().len();
        assert_eq!(len, 300 * 1024 + 5);
    }
}
