//! Polling a condition until it holds, instead of sleeping and hoping.

use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Polls `probe` every `every` until it returns `Some`, for at most `limit`.
pub async fn poll<T, F, Fut>(
    what: &str,
    every: Duration,
    limit: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(value) = probe().await {
            return Ok(value);
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                limit,
            });
        }
        tokio::time::sleep(every).await;
    }
}
