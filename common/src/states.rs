//! Spark's names for the protocol's states (`RUNNING`, not `DRIVER_STATE_RUNNING`).

use crate::proto::{DriverState, LogStream, WorkerState};

/// The plain, upper-case name a Spark user knows.
pub trait StateName {
    fn name(&self) -> &'static str;
}

impl StateName for DriverState {
    fn name(&self) -> &'static str {
        self.as_str_name()
            .strip_prefix("DRIVER_STATE_")
            .unwrap_or("UNKNOWN")
    }
}

impl StateName for WorkerState {
    fn name(&self) -> &'static str {
        self.as_str_name()
            .strip_prefix("WORKER_STATE_")
            .unwrap_or("UNKNOWN")
    }
}

impl StateName for LogStream {
    fn name(&self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl DriverState {
    /// A driver in a terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            DriverState::Finished | DriverState::Failed | DriverState::Killed | DriverState::Error
        )
    }
}

/// Reads a driver state from a protocol integer, mapping unknown values to `UNKNOWN`.
pub fn driver_state(value: i32) -> DriverState {
    DriverState::try_from(value).unwrap_or(DriverState::Unknown)
}

/// Reads a worker state from a protocol integer, mapping unknown values to `UNKNOWN`.
pub fn worker_state(value: i32) -> WorkerState {
    WorkerState::try_from(value).unwrap_or(WorkerState::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sparks() {
        assert_eq!(DriverState::Relaunching.name(), "RELAUNCHING");
        assert_eq!(WorkerState::Decommissioned.name(), "DECOMMISSIONED");
        assert!(DriverState::Error.is_terminal());
        assert!(!DriverState::Relaunching.is_terminal());
        assert_eq!(driver_state(99), DriverState::Unknown);
    }
}
