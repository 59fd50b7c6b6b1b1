//! Translation between the wire and the runner: the master's launch orders become [`Launch`]es
//! with the environment each kind of process gets, and the runner's [`Report`]s become the
//! driver or executor status messages the master reads.

use hearth_common::{
    ids::ProcessRef,
    named_resources,
    proto::{
        DriverState, DriverStatus, ExecutorState, ExecutorStatus, LaunchDriver, LaunchExecutor,
        ResourceAddresses, RunningDriver, RunningExecutor, worker_message::Msg,
    },
};

use std::collections::HashMap;

use crate::runner::{Credential, Launch, Outcome, Report};

/// How this worker's GPUs are named to CUDA.
#[derive(Debug, Clone, Default)]
pub struct GpuView {
    /// The worker offers GPUs.
    pub present: bool,
    /// A GPU address's name for CUDA where the two differ: in a container given some GPUs
    /// (`NVIDIA_VISIBLE_DEVICES=2,3`), CUDA numbers them from 0 in that order.
    pub cuda_ids: HashMap<String, String>,
}

/// The variables that hand a process its resource addresses: `HEARTH_RESOURCE_<NAME>` for
/// each, and for `gpu` also `CUDA_VISIBLE_DEVICES` (with `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so
/// indexes mean what `nvidia-smi` shows), which is set empty for a process given no GPU on a
/// worker that has some, so it cannot take one that another was given.
fn resource_env(given: &[ResourceAddresses], gpus: &GpuView) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = given
        .iter()
        .map(|r| (named_resources::env_name(&r.name), r.addresses.join(",")))
        .collect();
    match given.iter().find(|r| r.name == "gpu") {
        Some(given) => {
            let cuda: Vec<&str> = given
                .addresses
                .iter()
                .map(|a| gpus.cuda_ids.get(a).map_or(a.as_str(), String::as_str))
                .collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), cuda.join(",")));
            env.push(("CUDA_DEVICE_ORDER".into(), "PCI_BUS_ID".into()));
        }
        None if gpus.present => env.push(("CUDA_VISIBLE_DEVICES".into(), String::new())),
        None => {}
    }
    env
}

/// A driver's attempt. It can reach the master (`HEARTH_MASTER_URL` and the secret) to register
/// applications; `driver_host` is where this worker is seen, for its executors to connect to.
pub fn driver_launch(order: LaunchDriver, driver_host: &str, gpus: &GpuView) -> Launch {
    let spec = order.spec.unwrap_or_default();
    let mut identity = vec![
        ("HEARTH_DRIVER_ID".into(), order.driver_id.clone()),
        ("HEARTH_ATTEMPT".into(), order.attempt.to_string()),
        ("HEARTH_DRIVER_HOST".into(), driver_host.to_string()),
    ];
    if !order.app_id.is_empty() {
        identity.push(("HEARTH_APP_ID".into(), order.app_id));
    }
    identity.extend(resource_env(&order.resources, gpus));
    if spec.ui_port > 0 {
        identity.push(("HEARTH_UI_PORT".into(), spec.ui_port.to_string()));
        identity.push(("HEARTH_UI_BASE".into(), order.ui_base));
    }
    Launch {
        process: ProcessRef::Driver(order.driver_id),
        attempt: order.attempt,
        at_most_one: spec.at_most_one,
        command: spec.command,
        env: spec.env,
        cores: spec.cores,
        memory_mb: spec.memory_mb,
        identity,
        credential: if order.token.is_empty() {
            Credential::ClusterSecret
        } else {
            Credential::Token(order.token)
        },
    }
}

/// An executor: it knows its application, its number and where its driver is, but not the
/// cluster secret.
pub fn executor_launch(order: LaunchExecutor, gpus: &GpuView) -> Launch {
    let mut identity = vec![
        ("HEARTH_APP_ID".into(), order.app_id.clone()),
        ("HEARTH_EXECUTOR_ID".into(), order.executor_id.to_string()),
        ("HEARTH_EXECUTOR_RANK".into(), order.rank.to_string()),
        ("HEARTH_WORLD_SIZE".into(), order.world_size.to_string()),
        ("HEARTH_DRIVER_HOST".into(), order.driver_host),
    ];
    if !order.driver_id.is_empty() {
        identity.push(("HEARTH_DRIVER_ID".into(), order.driver_id));
    }
    identity.extend(resource_env(&order.resources, gpus));
    if !order.gang_hosts.is_empty() {
        identity.push(("HEARTH_GANG_HOSTS".into(), order.gang_hosts.join(",")));
    }
    Launch {
        process: ProcessRef::Executor {
            app_id: order.app_id,
            executor_id: order.executor_id,
        },
        attempt: 0,
        at_most_one: false,
        command: order.command,
        env: order.env,
        cores: order.cores,
        memory_mb: order.memory_mb,
        identity,
        credential: Credential::None,
    }
}

fn driver_state(outcome: Outcome) -> DriverState {
    match outcome {
        Outcome::Running => DriverState::Running,
        Outcome::Finished => DriverState::Finished,
        Outcome::Failed => DriverState::Failed,
        Outcome::Killed => DriverState::Killed,
        // ERROR: the master relaunches a supervised driver elsewhere.
        Outcome::Stopped | Outcome::NotStarted => DriverState::Error,
    }
}

fn executor_state(outcome: Outcome) -> ExecutorState {
    match outcome {
        Outcome::Running => ExecutorState::Running,
        Outcome::Finished => ExecutorState::Exited,
        Outcome::Failed | Outcome::NotStarted => ExecutorState::Failed,
        Outcome::Killed => ExecutorState::Killed,
        // LOST: replaced elsewhere without counting as a failure.
        Outcome::Stopped => ExecutorState::Lost,
    }
}

/// The status message a report becomes.
pub fn status_message(report: Report) -> Msg {
    match report.process {
        ProcessRef::Driver(driver_id) => Msg::DriverStatus(DriverStatus {
            driver_id,
            attempt: report.attempt,
            state: driver_state(report.outcome) as i32,
            exit_code: report.exit_code,
            message: report.message,
        }),
        ProcessRef::Executor {
            app_id,
            executor_id,
        } => Msg::ExecutorStatus(ExecutorStatus {
            app_id,
            executor_id,
            state: executor_state(report.outcome) as i32,
            exit_code: report.exit_code,
            message: report.message,
        }),
    }
}

/// What a registration lists: the processes running here and the terminal reports the master
/// may have missed, split by kind.
#[derive(Debug, Default)]
pub struct Inventory {
    pub running: Vec<RunningDriver>,
    pub running_executors: Vec<RunningExecutor>,
    pub completed: Vec<DriverStatus>,
    pub completed_executors: Vec<ExecutorStatus>,
}

impl Inventory {
    pub fn new<'a>(
        running: Vec<(ProcessRef, u32)>,
        unconfirmed: impl Iterator<Item = &'a Report>,
    ) -> Self {
        let mut inventory = Self::default();
        for (process, attempt) in running {
            match process {
                ProcessRef::Driver(driver_id) => {
                    inventory.running.push(RunningDriver { driver_id, attempt })
                }
                ProcessRef::Executor {
                    app_id,
                    executor_id,
                } => inventory.running_executors.push(RunningExecutor {
                    app_id,
                    executor_id,
                }),
            }
        }
        for report in unconfirmed {
            match status_message(report.clone()) {
                Msg::DriverStatus(s) => inventory.completed.push(s),
                Msg::ExecutorStatus(s) => inventory.completed_executors.push(s),
                _ => {}
            }
        }
        inventory
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executors_learn_where_their_driver_is_but_not_the_secret() {
        let launch = executor_launch(
            LaunchExecutor {
                app_id: "app-1".into(),
                executor_id: 3,
                command: vec!["run".into()],
                cores: 2,
                memory_mb: 512,
                driver_id: "driver-1".into(),
                driver_host: "10.0.0.5".into(),
                rank: 2,
                world_size: 4,
                resources: vec![ResourceAddresses {
                    name: "gpu".into(),
                    addresses: vec!["1".into(), "3".into()],
                }],
                ..Default::default()
            },
            // In a container given host GPUs 1 and 3, CUDA calls them 0 and 1.
            &GpuView {
                present: true,
                cuda_ids: HashMap::from([("1".into(), "0".into()), ("3".into(), "1".into())]),
            },
        );
        assert_eq!(launch.credential, Credential::None);
        assert_eq!(launch.process.to_string(), "app-1/3");
        for (key, value) in [
            ("HEARTH_APP_ID", "app-1"),
            ("HEARTH_EXECUTOR_ID", "3"),
            ("HEARTH_EXECUTOR_RANK", "2"),
            ("HEARTH_WORLD_SIZE", "4"),
            ("HEARTH_DRIVER_HOST", "10.0.0.5"),
            ("HEARTH_DRIVER_ID", "driver-1"),
            ("HEARTH_RESOURCE_GPU", "1,3"),
            ("CUDA_VISIBLE_DEVICES", "0,1"),
            ("CUDA_DEVICE_ORDER", "PCI_BUS_ID"),
        ] {
            assert!(
                launch.identity.iter().any(|(k, v)| k == key && v == value),
                "{key}"
            );
        }
    }

    #[test]
    fn a_process_given_no_gpu_on_a_worker_with_gpus_sees_none() {
        let gpus = GpuView {
            present: true,
            ..Default::default()
        };
        let env = resource_env(&[], &gpus);
        assert_eq!(
            env,
            vec![("CUDA_VISIBLE_DEVICES".to_string(), String::new())]
        );
        assert!(resource_env(&[], &GpuView::default()).is_empty());
    }

    #[test]
    fn a_leaving_worker_reports_lost_executors_and_erroring_drivers() {
        let report = |process| Report {
            process,
            attempt: 1,
            outcome: Outcome::Stopped,
            exit_code: None,
            message: "stopping".into(),
        };
        match status_message(report(ProcessRef::Driver("driver-1".into()))) {
            Msg::DriverStatus(s) => assert_eq!(s.state, DriverState::Error as i32),
            other => panic!("{other:?}"),
        }
        let exec = ProcessRef::Executor {
            app_id: "app-1".into(),
            executor_id: 0,
        };
        match status_message(report(exec)) {
            Msg::ExecutorStatus(s) => assert_eq!(s.state, ExecutorState::Lost as i32),
            other => panic!("{other:?}"),
        }
    }
}
