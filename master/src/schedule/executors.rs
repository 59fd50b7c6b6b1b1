//! Executors, application by application in registration order: dealt round-robin over the
//! workers with room (spread out), or each worker filled before the next (consolidated).

use super::{
    Ask, Offer,
    named::{self, Named},
    reasons::{MostFree, Wait, wait_reason},
};

/// What one application wants placed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppAsk {
    pub app_id: String,
    /// Per executor.
    pub cores: u32,
    pub memory_mb: u64,
    /// Executors still to place (its target minus those it holds; its cap already applied).
    pub wanted: u32,
    /// A gang's size: all `wanted` go in one turn or none ([`super::gangs`]); 0: not a gang.
    pub gang_size: u32,
    /// Named resources each executor needs on its worker.
    pub resources: Named,
}

/// Where one application's new executors go, and why the rest wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPlacement {
    pub app_id: String,
    /// One worker id per new executor, in placement order.
    pub workers: Vec<String>,
    /// Set when fewer than `wanted` were placed.
    pub waiting: Option<Wait>,
}

/// Places executors for `apps` (in registration order) on `offers`, after the drivers.
/// `offers` are left with what remains free.
pub fn place_executors(
    offers: &mut [Offer],
    apps: &[AppAsk],
    spread_out: bool,
) -> Vec<AppPlacement> {
    let largest_cores = offers.iter().map(|o| o.cores).max().unwrap_or(0);
    let largest_memory = offers.iter().map(|o| o.memory_mb).max().unwrap_or(0);
    apps.iter()
        .map(|app| {
            let fits = |o: &Offer| {
                o.free_cores >= app.cores
                    && o.free_memory_mb >= app.memory_mb
                    && o.free_resources.covers(&app.resources)
            };
            let mut usable: Vec<usize> = (0..offers.len()).filter(|&i| fits(&offers[i])).collect();
            usable.sort_by(|&a, &b| {
                let (a, b) = (&offers[a], &offers[b]);
                b.free_cores
                    .cmp(&a.free_cores)
                    .then(b.free_memory_mb.cmp(&a.free_memory_mb))
                    .then(a.worker_id.cmp(&b.worker_id))
            });
            let mut workers = Vec::new();
            let mut remaining = app.wanted;
            while remaining > 0 && !usable.is_empty() {
                for &i in &usable {
                    while remaining > 0 && fits(&offers[i]) {
                        let offer = &mut offers[i];
                        offer.free_cores -= app.cores;
                        offer.free_memory_mb -= app.memory_mb;
                        offer.free_resources.take(&app.resources);
                        workers.push(offer.worker_id.to_string());
                        remaining -= 1;
                        if spread_out {
                            break;
                        }
                    }
                }
                usable.retain(|&i| fits(&offers[i]));
            }
            let waiting = (remaining > 0).then(|| {
                let ask = Ask {
                    driver_id: app.app_id.clone(),
                    cores: app.cores,
                    memory_mb: app.memory_mb,
                    resources: app.resources.clone(),
                };
                if let Some((code, why)) = named::short_of(offers, &app.resources) {
                    return (code, more_wanted(remaining, &why));
                }
                let (code, why) = wait_reason(
                    offers,
                    &ask,
                    largest_cores,
                    largest_memory,
                    MostFree::of(offers),
                );
                (code, more_wanted(remaining, &why))
            });
            AppPlacement {
                app_id: app.app_id.clone(),
                workers,
                waiting,
            }
        })
        .collect()
}

/// "2 more executors wanted; each {why}".
pub(super) fn more_wanted(remaining: u32, why: &str) -> String {
    format!(
        "{remaining} more {} wanted; each {why}",
        if remaining == 1 {
            "executor"
        } else {
            "executors"
        }
    )
}
