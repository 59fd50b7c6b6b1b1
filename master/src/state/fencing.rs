//! `at_most_one` drivers held back from a relaunch until their last copy has surely stopped.
//!
//! When such a driver's worker is lost, the driver waits here instead of in the queue: until
//! the worker's lease has ended (the keeper there stops the driver by then, see the worker's
//! `lease` module) plus a margin, counted from when the master last heard from that worker.
//! When a worker comes back still running an old copy, the driver also waits until that copy's
//! end is reported (or that worker is lost again and its lease has ended).

use std::{sync::Arc, time::Duration};

use hearth_common::proto::DriverState;
use tokio::time::Instant;

use super::State;
use crate::schedule::WaitCode;

/// Added to the lease before a relaunch: the keeper's SIGKILL taking effect, and the master's
/// and the worker's clocks running at slightly different rates.
const MARGIN: Duration = Duration::from_secs(1);

/// The lease plus the margin: how long after it last heard from a worker the master waits.
pub fn relaunch_delay(lease: Duration) -> Duration {
    lease + lease / 100 + MARGIN
}

impl State {
    /// An `at_most_one` driver whose worker was lost was just put back to wait: it waits here
    /// until `worker_id`'s lease has surely ended, `since_heard` after the master last heard
    /// from it.
    pub(super) fn fence_after_loss(
        &mut self,
        driver_id: &str,
        worker_id: &str,
        since_heard: Duration,
        now_ms: i64,
    ) {
        let lease = Duration::from_millis(self.limits.lease_ms);
        let left = relaunch_delay(lease).saturating_sub(since_heard);
        let until_ms = now_ms.saturating_add(left.as_millis() as i64);
        let deadline = Instant::now() + left;
        let Some(d) = self.drivers.get_mut(driver_id) else {
            return;
        };
        // Relaunching, or back to SUBMITTED when it was being preempted: either way it waits.
        if !d.spec.at_most_one || d.state.is_terminal() || d.state == DriverState::Running {
            return;
        }
        let d = Arc::make_mut(d);
        d.fenced_until_ms = Some(d.fenced_until_ms.unwrap_or(0).max(until_ms));
        d.fence_deadline = Some(d.fence_deadline.map_or(deadline, |t| t.max(deadline)));
        d.waiting_code = Some(WaitCode::Fencing);
        d.waiting_reason = Some(format!(
            "at-most-one: waiting until {worker_id} has surely stopped its last copy (its lease \
             ends within {} ms)",
            left.as_millis()
        ));
        tracing::info!(
            driver_id,
            worker_id,
            wait_ms = left.as_millis() as u64,
            "at-most-one driver waits for its lost worker's lease to end"
        );
        self.hold_back(driver_id);
    }

    /// `worker_id` came back still running an older attempt of an `at_most_one` driver (it is
    /// ordered ended): the driver is not placed again until that copy's end is reported.
    pub(super) fn old_copy_seen(&mut self, driver_id: &str, worker_id: &str) {
        let Some(d) = self.drivers.get_mut(driver_id) else {
            return;
        };
        if !d.spec.at_most_one || d.state.is_terminal() {
            return;
        }
        if d.state == DriverState::Running {
            if d.worker_id.as_deref() != Some(worker_id) {
                tracing::error!(driver_id, worker_id, running_on = ?d.worker_id,
                    "at-most-one driver found running a second copy; ending the old one");
            }
            return;
        }
        let d = Arc::make_mut(d);
        d.old_copy_on = Some(worker_id.to_string());
        d.waiting_code = Some(WaitCode::Fencing);
        d.waiting_reason = Some(format!(
            "at-most-one: waiting for the copy still running on {worker_id} to end"
        ));
        tracing::info!(
            driver_id,
            worker_id,
            "at-most-one driver waits for its old copy to end"
        );
        self.hold_back(driver_id);
    }

    /// A report from `worker_id` about an attempt of `driver_id` the master no longer runs.
    pub(super) fn old_copy_ended(&mut self, driver_id: &str, worker_id: &str) {
        if let Some(d) = self.drivers.get_mut(driver_id)
            && d.old_copy_on.as_deref() == Some(worker_id)
        {
            Arc::make_mut(d).old_copy_on = None;
            tracing::info!(driver_id, worker_id, "at-most-one driver's old copy ended");
        }
    }

    /// `worker_id` was lost while running an old copy: the copy is stopped by its keeper
    /// once the lease ends.
    pub(super) fn old_copies_lost(&mut self, worker_id: &str, since_heard: Duration, now_ms: i64) {
        let lease = Duration::from_millis(self.limits.lease_ms);
        let left = relaunch_delay(lease).saturating_sub(since_heard);
        let until_ms = now_ms.saturating_add(left.as_millis() as i64);
        let deadline = Instant::now() + left;
        let ids: Vec<String> = self
            .fenced
            .iter()
            .filter(|id| {
                self.drivers
                    .get(*id)
                    .is_some_and(|d| d.old_copy_on.as_deref() == Some(worker_id))
            })
            .cloned()
            .collect();
        for id in ids {
            if let Some(d) = self.drivers.get_mut(&id) {
                let d = Arc::make_mut(d);
                d.old_copy_on = None;
                d.fenced_until_ms = Some(d.fenced_until_ms.unwrap_or(0).max(until_ms));
                d.fence_deadline = Some(d.fence_deadline.map_or(deadline, |t| t.max(deadline)));
            }
        }
    }

    fn hold_back(&mut self, driver_id: &str) {
        self.waiting.retain(|id| id != driver_id);
        self.reservations.remove(driver_id);
        self.fenced.insert(driver_id.to_string());
        self.forget_tried();
    }

    /// The longer leases of a master before have surely ended: fencing counts with this
    /// master's own from now on. Whether it changed.
    pub fn lower_lease(&mut self, now: Instant) -> bool {
        match self.lease_lowers {
            Some((at, lease_ms)) if now >= at => {
                tracing::info!(
                    lease_ms,
                    "the longer leases of the master before have ended"
                );
                self.limits.lease_ms = lease_ms;
                self.lease_lowers = None;
                true
            }
            _ => false,
        }
    }

    /// Whether a held-back driver may go back to the queue now.
    pub fn fence_due(&self, now: Instant) -> bool {
        self.fenced
            .iter()
            .filter_map(|id| self.drivers.get(id))
            .any(|d| fence_over(d, now))
    }

    /// After a restart: a held-back driver waits a whole lease from now, whatever was kept (a
    /// worker may have renewed its lease with the master before).
    pub(super) fn refence_after_restart(&mut self, now: Instant, now_ms: i64) {
        let left = relaunch_delay(Duration::from_millis(self.limits.lease_ms));
        for id in self.fenced.clone() {
            if let Some(d) = self.drivers.get_mut(&id) {
                let d = Arc::make_mut(d);
                d.fence_deadline = Some(now + left);
                d.fenced_until_ms = Some(
                    d.fenced_until_ms
                        .unwrap_or(0)
                        .max(now_ms.saturating_add(left.as_millis() as i64)),
                );
            }
        }
    }

    /// Puts the drivers whose last copy has surely stopped back at the head of their queue.
    pub fn release_fences(&mut self, now: Instant) -> bool {
        let due: Vec<String> = self
            .fenced
            .iter()
            .filter(|id| self.drivers.get(*id).is_none_or(|d| fence_over(d, now)))
            .cloned()
            .collect();
        for id in &due {
            self.fenced.remove(id);
            let Some(d) = self.drivers.get_mut(id) else {
                continue;
            };
            let d = Arc::make_mut(d);
            d.fenced_until_ms = None;
            d.fence_deadline = None;
            if d.state.is_terminal() || d.state == DriverState::Running {
                continue;
            }
            d.waiting_code = Some(WaitCode::Scheduling);
            d.waiting_reason = Some("waiting for the scheduler".into());
            tracing::info!(driver_id = %id, "at-most-one driver's last copy has stopped; it may run again");
            self.waiting.push_front(id.clone());
        }
        if !due.is_empty() {
            self.forget_tried();
        }
        !due.is_empty()
    }
}

fn fence_over(d: &super::DriverInfo, now: Instant) -> bool {
    d.state.is_terminal()
        || (d.old_copy_on.is_none() && d.fence_deadline.is_none_or(|until| until <= now))
}
