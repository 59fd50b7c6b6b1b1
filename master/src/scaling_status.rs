//! What the autoscaler wants and did, shared by it, the overview and `/metrics`.

use std::{collections::VecDeque, sync::Mutex};

use crate::config::AutoscaleConfig;

/// Decisions kept for the overview.
const DECISIONS_KEPT: usize = 20;

/// One thing the autoscaler did, for people.
#[derive(Debug, Clone)]
pub struct Decision {
    pub at_ms: i64,
    pub what: String,
    pub reason: String,
}

/// What the overview and `/metrics` show of the autoscaler.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<StatusInner>,
}

#[derive(Debug, Default, Clone)]
pub struct StatusInner {
    pub config: Option<AutoscaleConfig>,
    pub wanted: u32,
    pub replicas: u32,
    pub decisions: VecDeque<Decision>,
    pub scale_ups: u64,
    pub scale_downs: u64,
    /// Scale-ups met, and their seconds from demand first seen to the workers ALIVE, summed.
    pub demand_to_alive_count: u64,
    pub demand_to_alive_seconds: f64,
    /// Why the Kubernetes API cannot be used now, if it cannot.
    pub trouble: Option<String>,
}

impl Status {
    pub fn get(&self) -> StatusInner {
        self.lock().clone()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn decided(&self, what: String, reason: String) {
        tracing::info!(what, reason, "autoscaler");
        let mut s = self.lock();
        if s.decisions.len() >= DECISIONS_KEPT {
            s.decisions.pop_back();
        }
        s.decisions.push_front(Decision {
            at_ms: hearth_common::ids::now_ms(),
            what,
            reason,
        });
    }
}
