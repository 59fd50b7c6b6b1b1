//! Reservations: an item that has waited too long at the head of its queue claims the worker
//! where it will fit first, and the room freeing there is kept for it, so a large item waits a
//! bounded time instead of forever behind a stream of small ones. When everything in its way
//! has a time limit, the moment it fits is known: that is its estimated start, and smaller work
//! whose own limit ends before then may use the held room meanwhile (backfill).

use super::Offer;

/// Room held on one worker for one waiting driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Index into the offers.
    pub worker: usize,
    pub driver_id: String,
    /// When the driver will fit there, if everything it waits for has a time limit.
    pub ready_at_ms: Option<i64>,
}

/// Something running on a worker: what it holds and when it must end, if it has a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub cores: u32,
    pub memory_mb: u64,
    pub ends_at_ms: Option<i64>,
}

/// When `cores` and `memory_mb` fit on `offer`, given what runs there (`ending`): now, or once
/// enough has ended by its limit; `None` when that needs something without a limit to end.
pub fn fits_at(
    offer: &Offer,
    ending: &[Ending],
    cores: u32,
    memory_mb: u64,
    now_ms: i64,
) -> Option<i64> {
    if offer.cores < cores || offer.memory_mb < memory_mb {
        return None;
    }
    let (mut free_cores, mut free_memory) = (offer.free_cores, offer.free_memory_mb);
    if free_cores >= cores && free_memory >= memory_mb {
        return Some(now_ms);
    }
    let mut by_end: Vec<&Ending> = ending.iter().collect();
    by_end.sort_by_key(|e| e.ends_at_ms.unwrap_or(i64::MAX));
    for e in by_end {
        let at = e.ends_at_ms?;
        free_cores = free_cores.saturating_add(e.cores);
        free_memory = free_memory.saturating_add(e.memory_mb);
        if free_cores >= cores && free_memory >= memory_mb {
            return Some(at.max(now_ms));
        }
    }
    None
}

/// The worker where `cores` and `memory_mb` fit first, among those not `taken` by another
/// reservation and large enough: a known time before an unknown one, the earlier the better,
/// then the most free now; with when it fits there.
pub fn choose_worker(
    offers: &[Offer],
    ending: &[Vec<Ending>],
    taken: &[bool],
    cores: u32,
    memory_mb: u64,
    now_ms: i64,
) -> Option<(usize, Option<i64>)> {
    offers
        .iter()
        .enumerate()
        .filter(|(i, o)| !taken[*i] && o.cores >= cores && o.memory_mb >= memory_mb)
        .map(|(i, o)| {
            let at = fits_at(o, &ending[i], cores, memory_mb, now_ms);
            (i, at, o)
        })
        .min_by(|a, b| {
            let key = |x: &(usize, Option<i64>, &Offer)| {
                (
                    x.1.unwrap_or(i64::MAX),
                    std::cmp::Reverse(x.2.free_cores),
                    std::cmp::Reverse(x.2.free_memory_mb),
                    x.2.worker_id.clone(),
                )
            };
            key(a).cmp(&key(b))
        })
        .map(|(i, at, _)| (i, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, cores: u32, free_cores: u32) -> Offer {
        Offer {
            free_resources: Default::default(),
            resources: Default::default(),
            worker_id: id.into(),
            cores,
            memory_mb: 4096,
            free_cores,
            free_memory_mb: 4096,
            drivers: 0,
        }
    }

    fn ending(cores: u32, at: Option<i64>) -> Ending {
        Ending {
            cores,
            memory_mb: 0,
            ends_at_ms: at,
        }
    }

    #[test]
    fn it_fits_once_enough_has_ended_by_its_limit() {
        let w = offer("w", 4, 1);
        let running = [ending(1, Some(500)), ending(2, Some(300))];
        assert_eq!(fits_at(&w, &running, 3, 10, 100), Some(300));
        assert_eq!(fits_at(&w, &running, 4, 10, 100), Some(500));
        assert_eq!(fits_at(&w, &running, 1, 10, 100), Some(100));
        assert_eq!(fits_at(&w, &running, 5, 10, 100), None);
        let unlimited = [ending(3, None)];
        assert_eq!(fits_at(&w, &unlimited, 2, 10, 100), None);
    }

    #[test]
    fn the_worker_where_it_fits_first_is_chosen_and_a_taken_one_never() {
        let offers = [offer("a", 4, 0), offer("b", 4, 2), offer("small", 2, 2)];
        let ending = vec![vec![ending(4, Some(1_000))], vec![ending(2, None)], vec![]];
        // `b` has more free now, but only `a` frees by a known time.
        assert_eq!(
            choose_worker(&offers, &ending, &[false; 3], 4, 10, 0),
            Some((0, Some(1_000)))
        );
        assert_eq!(
            choose_worker(&offers, &ending, &[true, false, false], 4, 10, 0),
            Some((1, None))
        );
        assert_eq!(choose_worker(&offers, &ending, &[false; 3], 8, 10, 0), None);
    }
}
