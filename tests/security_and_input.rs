//! The shared secret and bad input: refused with a clear error, and nothing changes.

mod support;

use std::{process::Command, time::Duration};

use hearth_common::{auth::Secret, client::Client, proto::DriverSpec};
use support::{Cluster, HEARTH, stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_secret_is_refused() {
    let mut cluster = Cluster::start();
    cluster.add_worker(1, "512m").await;

    let run = |secret: Option<&str>| {
        let mut cmd = Command::new(HEARTH);
        cmd.args(["list", "workers", "--master", &cluster.url])
            .env_remove("HEARTH_SECRET")
            .env_remove("HEARTH_SECRET_FILE");
        if let Some(s) = secret {
            cmd.env("HEARTH_SECRET", s);
        }
        cmd.output().unwrap()
    };
    let out = run(None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not authenticated: missing authorization"),
        "{}",
        stderr(&out)
    );
    let out = run(Some("wrong"));
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong secret"), "{}", stderr(&out));

    // The secret can also come from a file (with its trailing newline).
    let file = cluster.dir.path().join("secret");
    std::fs::write(&file, format!("{}\n", cluster.secret.as_deref().unwrap())).unwrap();
    let out = Command::new(HEARTH)
        .args(["list", "workers", "--master", &cluster.url, "--secret-file"])
        .arg(&file)
        .env_remove("HEARTH_SECRET")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // The client library gets UNAUTHENTICATED, and a submission with a wrong secret runs nothing.
    let wrong = Secret::new("wrong").unwrap();
    let client = Client::connect(&cluster.url, Some(&wrong)).await.unwrap();
    let err = client
        .submit(DriverSpec {
            command: vec!["true".into()],
            cores: 1,
            memory_mb: 64,
            ..Default::default()
        })
        .await
        .unwrap_err();
    match err {
        hearth_common::Error::Status(s) => assert_eq!(s.code(), tonic::Code::Unauthenticated),
        other => panic!("{other}"),
    }
    assert!(cluster.client().await.drivers().await.unwrap().is_empty());

    // A worker with the wrong secret never registers.
    let id = {
        let mut cmd_secret = cluster.secret.clone();
        cluster.secret = Some("wrong".into());
        let id = cluster.spawn_worker(1, "512m", &[]);
        std::mem::swap(&mut cluster.secret, &mut cmd_secret);
        id
    };
    let log = cluster.dir.path().join("worker-1.log");
    support::wait_for(
        "the refusal in the worker's log",
        Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { text.contains("refused this worker's secret").then_some(()) }
        },
    )
    .await;
    let workers = cluster.client().await.workers().await.unwrap();
    assert!(!workers.iter().any(|w| w.id == id), "{workers:?}");
    assert_eq!(workers.len(), 1);

    // The gRPC health service stays open for Kubernetes probes.
    let channel = hearth_common::client::channel(&cluster.url).await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(resp.into_inner().status, 1, "SERVING");

    // So does server reflection, for grpcurl.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = hearth_common::client::channel(&cluster.url).await.unwrap();
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for wanted in [
        "hearth.v1.ClientService",
        "hearth.v1.WorkerService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
}

#[test]
fn the_master_refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::master_command(dir.path()).output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("refusing to start without a shared secret"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let mut cluster = Cluster::start();
    cluster.add_worker(2, "1g").await;

    for (args, needle) in [
        (vec!["submit", "--cores", "0", "--", "true"], "cores"),
        (vec!["submit", "--cores", "-2", "--", "true"], "cores"),
        (
            vec!["submit", "--memory", "4x", "--", "true"],
            "\"4x\" is not a memory size",
        ),
        (
            vec!["submit", "--env", "NOEQUALS", "--", "true"],
            "KEY=VALUE",
        ),
        (vec!["submit", "--", ""], "command: must not be empty"),
        (
            vec!["submit", "--env", "HEARTH_X=1", "--", "true"],
            "reserved",
        ),
        (
            vec!["status", "driver-20991231000000-0042"],
            "not found: no driver driver-20991231000000-0042",
        ),
        (
            vec!["status", "bogus"],
            "invalid argument: driver_id: \"bogus\" is not a driver id",
        ),
        (vec!["kill", "driver-20991231000000-0042"], "not found"),
        (vec!["logs", "driver-20991231000000-0042"], "not found"),
    ] {
        let out = cluster.hearth(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?} printed {}", stdout(&out));
    }
    let out = cluster.hearth(&["submit", "--"]);
    assert!(!out.status.success(), "an empty command is refused");

    // The same checks hold at the master's edge for any gRPC client.
    let client = cluster.client().await;
    let good = DriverSpec {
        command: vec!["true".into()],
        cores: 1,
        memory_mb: 64,
        ..Default::default()
    };
    let cases: Vec<(DriverSpec, &str)> = vec![
        (
            DriverSpec {
                cores: 0,
                ..good.clone()
            },
            "cores: must be at least 1",
        ),
        (
            DriverSpec {
                memory_mb: 0,
                ..good.clone()
            },
            "memory: must be at least 1m",
        ),
        (
            DriverSpec {
                command: vec![],
                ..good.clone()
            },
            "command: must not be empty",
        ),
    ];
    for (spec, needle) in cases {
        match client.submit(spec).await.unwrap_err() {
            hearth_common::Error::Status(s) => {
                assert_eq!(s.code(), tonic::Code::InvalidArgument);
                assert!(s.message().contains(needle), "{}", s.message());
            }
            other => panic!("{other}"),
        }
    }
    match client
        .driver("driver-20991231000000-0042")
        .await
        .unwrap_err()
    {
        hearth_common::Error::Status(s) => assert_eq!(s.code(), tonic::Code::NotFound),
        other => panic!("{other}"),
    }
    assert!(
        client.drivers().await.unwrap().is_empty(),
        "nothing was created"
    );
}
