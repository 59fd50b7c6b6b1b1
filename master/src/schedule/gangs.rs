//! All-or-nothing placement of a gang: every executor it still wants goes in this turn, or
//! none does. A gang that waits holds no slot, so two gangs can never each hold part of what
//! the other needs. Its reason says how many fit now and how many the cluster could hold idle.

use super::{
    AppAsk, AppPlacement, Offer,
    executors::place_executors,
    reasons::{Wait, WaitCode, plural},
};

/// How many executors of `cores` and `memory_mb` fit in one worker's `room` (cores, memory).
pub fn pieces_in(room: (u32, u64), cores: u32, memory_mb: u64) -> u64 {
    u64::from(room.0 / cores.max(1)).min(room.1 / memory_mb.max(1))
}

/// Executors of `app` that fit in the free room of `offers` now, and on the same workers idle.
pub fn gang_fit(offers: &[Offer], app: &AppAsk) -> (u64, u64) {
    let now = offers
        .iter()
        .map(|o| {
            pieces_in((o.free_cores, o.free_memory_mb), app.cores, app.memory_mb)
                .min(o.free_resources.pieces(&app.resources))
        })
        .sum();
    let idle = offers
        .iter()
        .map(|o| {
            pieces_in((o.cores, o.memory_mb), app.cores, app.memory_mb)
                .min(o.resources.pieces(&app.resources))
        })
        .sum();
    (now, idle)
}

/// Why a gang of `size` waits with `wanted` still to place, `fit` of them fitting now and
/// `idle` fitting the cluster were it empty.
pub fn gang_wait(size: u32, wanted: u32, fit: u64, idle: u64) -> Wait {
    let all = if wanted == size {
        format!("gang of {size}")
    } else {
        format!("gang of {size} ({wanted} to start)")
    };
    let each = |n: u64| plural(n, "executor");
    if idle < u64::from(wanted) {
        (
            WaitCode::TooLarge,
            format!(
                "{all}: only {} fit these workers even when idle ({} free now); all start \
                 together or none, so it waits for more or larger workers and holds nothing",
                each(idle),
                fit
            ),
        )
    } else {
        (
            WaitCode::NoFreeSlots,
            format!(
                "{all}: {} fit in the free room now; all start together or none, so it waits \
                 for room to free and holds nothing meanwhile",
                each(fit)
            ),
        )
    }
}

/// Places every executor `app` wants, or none and says why.
pub fn place_gang(offers: &mut [Offer], app: &AppAsk, spread_out: bool) -> AppPlacement {
    let (fit, idle) = gang_fit(offers, app);
    if fit >= u64::from(app.wanted) {
        if let Some(placement) =
            place_executors(offers, std::slice::from_ref(app), spread_out).pop()
        {
            return placement;
        }
    }
    AppPlacement {
        app_id: app.app_id.clone(),
        workers: Vec::new(),
        waiting: (app.wanted > 0).then(|| gang_wait(app.gang_size, app.wanted, fit, idle)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, cores: u32, free: u32) -> Offer {
        Offer {
            free_resources: Default::default(),
            resources: Default::default(),
            worker_id: id.into(),
            cores,
            memory_mb: 64 * 1024,
            free_cores: free,
            free_memory_mb: 64 * 1024,
            drivers: 0,
        }
    }

    fn gang(wanted: u32) -> AppAsk {
        AppAsk {
            resources: Default::default(),
            app_id: "app".into(),
            cores: 1,
            memory_mb: 100,
            wanted,
            gang_size: wanted,
        }
    }

    #[test]
    fn a_gang_that_does_not_fit_whole_takes_nothing_and_says_how_many_fit() {
        let mut offers = vec![offer("a", 3, 3), offer("b", 3, 3)];
        let before = offers.clone();
        let placed = place_gang(&mut offers, &gang(8), true);
        assert!(placed.workers.is_empty());
        assert_eq!(offers, before, "a waiting gang holds nothing");
        let (code, why) = placed
            .waiting
            .unwrap_or((WaitCode::Scheduling, String::new()));
        assert_eq!(code, WaitCode::TooLarge);
        assert!(why.starts_with("gang of 8: only 6 executors fit"), "{why}");
        assert!(why.contains("6 free now"), "{why}");
    }

    #[test]
    fn a_gang_that_fits_the_idle_cluster_waits_for_room_then_goes_whole() {
        let mut offers = vec![offer("a", 4, 1), offer("b", 4, 4)];
        let placed = place_gang(&mut offers, &gang(8), true);
        assert!(placed.workers.is_empty());
        let (code, why) = placed
            .waiting
            .unwrap_or((WaitCode::Scheduling, String::new()));
        assert_eq!(code, WaitCode::NoFreeSlots);
        assert!(why.contains("5 executors fit"), "{why}");
        offers[0].free_cores = 4;
        let placed = place_gang(&mut offers, &gang(8), true);
        assert_eq!(placed.workers.len(), 8);
        assert!(placed.waiting.is_none());
        assert!(offers.iter().all(|o| o.free_cores == 0));
    }
}
