//! Drivers page by page, across memory and the state file: what the master holds (waiting,
//! running, the most recent completed) merged with the older completed drivers kept in the
//! store's history, newest id first. Driver ids start with their submission time, so this is
//! also newest submission first.

use hearth_common::proto::{self, DriverState};

use crate::{actor::MasterHandle, error::Result};

/// The most drivers one page holds.
pub const MAX_PAGE: usize = 1000;

/// The page of drivers with ids below `token` (all when empty), at most `page_size`.
pub fn page(
    master: &MasterHandle,
    page_size: u32,
    token: &str,
) -> Result<proto::ListDriversResponse> {
    let size = (page_size as usize).clamp(1, MAX_PAGE);
    let before = (!token.is_empty()).then_some(token);
    let state = master.snapshot();
    let in_memory: Vec<_> = match before {
        Some(b) => state
            .drivers
            .range::<_, str>((std::ops::Bound::Unbounded, std::ops::Bound::Excluded(b)))
            .rev()
            .take(size)
            .map(|(_, d)| d.clone())
            .collect(),
        None => state.drivers.values().rev().take(size).cloned().collect(),
    };
    let kept = master.store.history_page(before, 0, size)?;
    // Newest first from both; a driver pruned between the two reads is in both.
    let mut merged: Vec<proto::Driver> = Vec::with_capacity(size);
    let (mut a, mut b) = (in_memory.iter().peekable(), kept.iter().peekable());
    while merged.len() < size {
        let next = match (a.peek(), b.peek()) {
            (Some(m), Some(h)) if m.id == h.id => {
                b.next();
                a.next().map(|d| d.to_proto())
            }
            (Some(m), Some(h)) if m.id > h.id => a.next().map(|d| d.to_proto()),
            (Some(_), Some(_)) | (None, Some(_)) => b.next().map(|d| d.to_proto()),
            (Some(_), None) => a.next().map(|d| d.to_proto()),
            (None, None) => None,
        };
        let Some(driver) = next else { break };
        merged.push(driver);
    }
    // A waiting driver's place in its queue, as the unpaged list gives it.
    if merged
        .iter()
        .any(|d| d.state == DriverState::Submitted as i32)
    {
        let positions = state.queue_positions(None);
        for d in &mut merged {
            if let Some((position, of)) = positions.get(d.id.as_str()) {
                d.queue_position = *position;
                d.queue_waiting = *of;
            }
        }
    }
    let next_page_token = if merged.len() == size {
        merged.last().map(|d| d.id.clone()).unwrap_or_default()
    } else {
        String::new()
    };
    Ok(proto::ListDriversResponse {
        drivers: merged,
        next_page_token,
    })
}
