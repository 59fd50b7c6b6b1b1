//! Spark's names for the protocol's states (`RUNNING`, not `DRIVER_STATE_RUNNING`).

use crate::proto::{ApplicationState, DriverState, ExecutorState, LogStream, WorkerState};

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

impl StateName for ApplicationState {
    fn name(&self) -> &'static str {
        self.as_str_name()
            .strip_prefix("APPLICATION_STATE_")
            .unwrap_or("UNKNOWN")
    }
}

impl StateName for ExecutorState {
    fn name(&self) -> &'static str {
        self.as_str_name()
            .strip_prefix("EXECUTOR_STATE_")
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

impl ApplicationState {
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ApplicationState::Finished | ApplicationState::Failed | ApplicationState::Killed
        )
    }
}

impl ExecutorState {
    /// LAUNCHING and RUNNING executors hold their slot; every other state is final.
    pub fn is_live(self) -> bool {
        matches!(self, ExecutorState::Launching | ExecutorState::Running)
    }
}

/// Reads an application state from a protocol integer; unknown values read as UNSPECIFIED.
pub fn app_state(value: i32) -> ApplicationState {
    ApplicationState::try_from(value).unwrap_or(ApplicationState::Unspecified)
}

/// Reads an executor state from a protocol integer.
pub fn executor_state(value: i32) -> ExecutorState {
    ExecutorState::try_from(value).unwrap_or(ExecutorState::Unspecified)
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
        assert_eq!(ApplicationState::Waiting.name(), "WAITING");
        assert_eq!(ExecutorState::Lost.name(), "LOST");
        assert!(ExecutorState::Launching.is_live() && !ExecutorState::Exited.is_live());
    }
}
