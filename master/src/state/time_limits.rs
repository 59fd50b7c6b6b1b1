//! Time limits: a driver that has run for its `time_limit_ms`, or an application registered
//! without a driver that has lived for its own, is ended KILLED with the reason.

use std::{sync::Arc, time::Duration};

use hearth_common::{
    duration::format_duration,
    proto::{self, DriverState, master_message::Msg},
};

use super::{Effect, State};

fn reached(limit_ms: u64) -> String {
    format!(
        "time limit of {} reached",
        format_duration(Duration::from_millis(limit_ms))
    )
}

impl State {
    /// Orders the end of everything past its time limit; returns whether anything was.
    pub fn enforce_time_limits(&mut self, now_ms: i64, effects: &mut Vec<Effect>) -> bool {
        // Every running driver is read only once one may have reached its limit.
        let over: Vec<String> = if self.limits_quiet_until_ms.is_some_and(|t| now_ms < t) {
            Vec::new()
        } else {
            let deadline = |d: &super::DriverInfo| {
                (d.state == DriverState::Running && d.spec.time_limit_ms > 0)
                    .then_some(d.running_since_ms)
                    .flatten()
                    .map(|since| since.saturating_add(d.spec.time_limit_ms as i64))
            };
            let (over, quiet): (Vec<_>, Vec<_>) = self
                .workers
                .values()
                .flat_map(|w| w.drivers.iter())
                .filter_map(|id| self.drivers.get(id))
                .filter_map(|d| deadline(d).map(|at| (d, at)))
                .partition(|(_, at)| now_ms >= *at);
            self.limits_quiet_until_ms =
                Some(quiet.iter().map(|(_, at)| *at).min().unwrap_or(i64::MAX));
            over.into_iter()
                .filter(|(d, _)| !d.stop_requested())
                .map(|(d, _)| d.id.clone())
                .collect()
        };
        for id in &over {
            let Some(d) = self.drivers.get_mut(id) else {
                continue;
            };
            let d = Arc::make_mut(d);
            let why = reached(d.spec.time_limit_ms);
            tracing::info!(driver_id = %id, limit_ms = d.spec.time_limit_ms, "time limit reached");
            d.kill_requested = true;
            d.message = why.clone();
            if let Some(worker_id) = &d.worker_id {
                effects.push(Effect::send(
                    worker_id,
                    Msg::KillDriver(proto::KillDriver {
                        driver_id: id.clone(),
                        attempt: d.attempt,
                        reason: why,
                        ..Default::default()
                    }),
                ));
            }
        }
        let apps_over: Vec<(String, u64)> = self
            .active_apps
            .iter()
            .filter_map(|id| self.apps.get(id))
            .filter(|a| {
                a.driver_id.is_none()
                    && a.spec.time_limit_ms > 0
                    && now_ms.saturating_sub(a.registered_at_ms) >= a.spec.time_limit_ms as i64
            })
            .map(|a| (a.id.clone(), a.spec.time_limit_ms))
            .collect();
        for (app_id, limit_ms) in &apps_over {
            tracing::info!(app_id, limit_ms, "time limit reached");
            self.end_app(
                app_id,
                proto::ApplicationState::Killed,
                reached(*limit_ms),
                now_ms,
                effects,
            );
        }
        let gangs_over = self.end_overdue_gangs(now_ms, effects);
        !over.is_empty() || !apps_over.is_empty() || gangs_over
    }

    /// Ends FAILED every gang that has waited past its `gang_timeout_ms`, with why it waited.
    fn end_overdue_gangs(&mut self, now_ms: i64, effects: &mut Vec<Effect>) -> bool {
        let overdue: Vec<(String, String)> = self
            .active_apps
            .iter()
            .filter_map(|id| self.apps.get(id))
            .filter(|a| {
                a.spec.gang_timeout_ms > 0
                    && a.wanted() > 0
                    && a.gang_waiting_since_ms.is_some_and(|since| {
                        now_ms.saturating_sub(since) >= a.spec.gang_timeout_ms as i64
                    })
            })
            .map(|a| {
                let waited = a.waiting_reason.as_deref().unwrap_or("it was not placed");
                let why = format!(
                    "gang timeout of {} reached: {waited}",
                    format_duration(Duration::from_millis(a.spec.gang_timeout_ms))
                );
                (a.id.clone(), why)
            })
            .collect();
        for (app_id, why) in &overdue {
            tracing::info!(app_id, why, "gang timeout reached");
            let driver_id = self.apps.get(app_id).and_then(|a| a.driver_id.clone());
            self.end_app(
                app_id,
                proto::ApplicationState::Failed,
                why.clone(),
                now_ms,
                effects,
            );
            if let Some(driver_id) = driver_id {
                self.fail_driver(
                    &driver_id,
                    format!("its application {app_id} failed: {why}"),
                    effects,
                );
            }
        }
        !overdue.is_empty()
    }
}
