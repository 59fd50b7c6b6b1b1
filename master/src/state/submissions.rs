//! Submissions: a new driver admitted to the queue, a retry answered with its driver, and the
//! owner recorded.

use std::sync::Arc;

use hearth_common::proto::{ApplicationSpec, DriverSpec, DriverState};

use super::{DriverInfo, State};
use crate::{
    error::{Error, Result},
    schedule::WaitCode,
};

impl State {
    /// Accepts a (validated) driver; it waits until [`State::schedule`] places it.
    pub fn submit(
        &mut self,
        spec: DriverSpec,
        app_spec: Option<ApplicationSpec>,
        now_ms: i64,
    ) -> Result<String> {
        self.submit_once(spec, app_spec, None, now_ms)
    }

    /// Accepts a (validated) driver unless `submission_id` was seen before, in which case the
    /// driver it made is returned and nothing changes (a client retrying after a lost answer),
    /// or, if that driver was submitted with another spec, the submission is refused.
    /// A new driver is refused while the queue holds `max_waiting` already.
    /// [`State::submit_once`] for `owner` (a tenant; `None`: the admin). A submission id
    /// already used by someone else is refused rather than answered with their driver.
    pub fn submit_owned(
        &mut self,
        spec: DriverSpec,
        app_spec: Option<ApplicationSpec>,
        submission_id: Option<String>,
        owner: Option<String>,
        now_ms: i64,
    ) -> Result<String> {
        if let Some(existing) = submission_id
            .as_ref()
            .and_then(|s| self.submissions.get(s))
            .and_then(|id| self.drivers.get(id))
            && existing.owner != owner
        {
            return Err(Error::AlreadyExists(format!(
                "submission_id: {} was already used by someone else; give a new id",
                submission_id.unwrap_or_default()
            )));
        }
        let seq = self.next_driver_seq;
        let id = self.submit_once(spec, app_spec, submission_id, now_ms)?;
        if self.next_driver_seq != seq
            && let Some(d) = self.drivers.get_mut(&id)
        {
            Arc::make_mut(d).owner = owner;
        }
        Ok(id)
    }

    pub fn submit_once(
        &mut self,
        mut spec: DriverSpec,
        app_spec: Option<ApplicationSpec>,
        submission_id: Option<String>,
        now_ms: i64,
    ) -> Result<String> {
        if spec.queue.is_empty() {
            spec.queue = crate::schedule::DEFAULT_QUEUE.to_string();
        }
        if let Some((given, existing)) = submission_id
            .as_ref()
            .and_then(|s| Some((s, self.submissions.get(s)?)))
        {
            // A retry is answered with its driver; the same id for other work is a mistake
            // that would otherwise silently return a driver that does something else.
            let same = self
                .drivers
                .get(existing)
                .is_none_or(|d| *d.spec == spec && d.app_spec == app_spec);
            return if same {
                Ok(existing.clone())
            } else {
                Err(Error::AlreadyExists(format!(
                    "submission_id: {given} was already used for {existing}, with another spec; \
                     give a new id for new work"
                )))
            };
        }
        if self.waiting.len() >= self.limits.max_waiting {
            return Err(Error::ResourceExhausted(format!(
                "{} drivers are waiting already, the most this master queues (--max-waiting); try again later",
                self.waiting.len()
            )));
        }
        self.queue_index("queue", &spec.queue)?;
        let id = hearth_common::ids::driver_id(self.started_ms, self.next_driver_seq);
        self.next_driver_seq += 1;
        if let Some(s) = &submission_id {
            self.submissions.insert(s.clone(), id.clone());
        }
        let mut driver = DriverInfo {
            id: id.clone(),
            submission_id,
            spec: Arc::new(spec),
            app_spec,
            state: DriverState::Submitted,
            worker_id: None,
            attempt: 0,
            relaunches: 0,
            exit_code: None,
            waiting_reason: Some("waiting for the scheduler".into()),
            waiting_code: Some(WaitCode::Scheduling),
            owner: None,
            running_since_ms: None,
            estimated_start_ms: None,
            estimate: None,
            message: String::new(),
            submitted_at_ms: now_ms,
            kill_requested: false,
            failed_because: None,
            app_id: None,
            apps: Vec::new(),
            history: Vec::new(),
            preempted: None,
            preemptions: Vec::new(),
            fenced_until_ms: None,
            fence_deadline: None,
            old_copy_on: None,
            resources: Vec::new(),
        };
        driver.record(DriverState::Submitted, "", now_ms);
        self.drivers.insert(id.clone(), Arc::new(driver));
        self.waiting.push_back(id.clone());
        Ok(id)
    }
}
