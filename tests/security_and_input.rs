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
        support::output_within(&mut cmd, support::CLI_LIMIT)
    };
    let out = run(None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("not authenticated: missing authorization"),
        "{}",
        stderr(&out)
    );
    let out = run(Some("wrong"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("wrong secret"), "{}", stderr(&out));

    // The secret can also come from a file (with its trailing newline).
    let file = cluster.dir.path().join("secret");
    std::fs::write(&file, format!("{}\n", cluster.secret.as_deref().unwrap())).unwrap();
    let out = support::output_within(
        Command::new(HEARTH)
            .args(["list", "workers", "--master", &cluster.url, "--secret-file"])
            .arg(&file)
            .env_remove("HEARTH_SECRET"),
        support::CLI_LIMIT,
    );
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
    let channel = hearth_common::client::channel(&cluster.url, &Default::default())
        .await
        .unwrap();
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
    let channel = hearth_common::client::channel(&cluster.url, &Default::default())
        .await
        .unwrap();
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

    // And its older version, which some tools still speak.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let channel = hearth_common::client::channel(&cluster.url, &Default::default())
            .await
            .unwrap();
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut answers = ServerReflectionClient::new(channel)
            .server_reflection_info(tokio_stream::once(request))
            .await
            .expect("reflection v1alpha is served")
            .into_inner();
        let answer = answers.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
            panic!("not a service list: {answer:?}");
        };
        assert!(
            list.service
                .iter()
                .any(|s| s.name == "hearth.v1.ClientService"),
            "{list:?}"
        );
    }
}

/// Calls `path` with one empty message (valid for any request type) and the given
/// authorization header; returns the status the master answered with.
async fn call_raw(url: &str, path: &str, authorization: Option<&str>) -> tonic::Status {
    let channel = hearth_common::client::channel(url, &Default::default())
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(tokio_stream::once(()));
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().unwrap();
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc.streaming(request, path, codec).await {
        Ok(response) => {
            let mut stream = response.into_inner();
            match stream.message().await {
                Err(status) => status,
                Ok(_) => tonic::Status::ok("answered"),
            }
        }
        Err(status) => status,
    }
}

/// CVE-2020-9480 was an RPC of Spark's master that skipped authentication. Here every RPC the
/// protocol defines, found from its descriptor rather than listed by hand, is tried without the
/// secret and with a wrong one: each is refused, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_of_every_service_refuses_a_missing_or_wrong_secret() {
    let mut cluster = Cluster::start();
    let worker = cluster.add_worker(1, "512m").await;
    let rpcs = support::every_rpc();
    assert!(rpcs.len() >= 15, "{rpcs:?}");
    assert!(rpcs.iter().any(|p| p == "/hearth.v1.WorkerService/Session"));
    assert!(
        rpcs.iter()
            .any(|p| p == "/hearth.v1.ClientService/KillApplication")
    );
    let before = cluster.json("/api/v1/workers");
    for path in &rpcs {
        for authorization in [None, Some("Bearer wrong"), Some("Basic dGVzdA==")] {
            let status = call_raw(&cluster.url, path, authorization).await;
            assert_eq!(
                status.code(),
                tonic::Code::Unauthenticated,
                "{path} with {authorization:?}: {status:?}"
            );
        }
    }
    // With the secret the same empty calls reach the handlers (and are refused as bad input
    // or answered), which shows the calls above were well-formed.
    let secret = format!("Bearer {}", cluster.secret.as_deref().unwrap());
    let status = call_raw(
        &cluster.url,
        "/hearth.v1.ClientService/SubmitDriver",
        Some(&secret),
    )
    .await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let client = cluster.client().await;
    assert!(client.drivers().await.unwrap().is_empty());
    assert!(client.apps().await.unwrap().is_empty());
    let workers = client.workers().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].id, worker);
    assert_eq!(
        cluster.json("/api/v1/workers")[0]["state"],
        before[0]["state"]
    );
}

#[test]
fn the_master_refuses_to_start_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = support::output_within(&mut support::master_command(dir.path()), support::CLI_LIMIT);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
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

    // Values a flag cannot hold are refused by the command line itself (exit 2, with the
    // parser's reason); input the command line reads but the checks refuse exits 1, naming the
    // field. Each reason below is the project's own, not words clap prints by itself.
    for (args, code, needle) in [
        (
            vec!["submit", "--cores", "0", "--", "true"],
            2,
            "'--cores <CORES>': must be at least 1, got 0",
        ),
        (
            vec!["submit", "--cores", "-2", "--", "true"],
            2,
            "must be at least 1, got -2",
        ),
        (
            vec!["submit", "--memory", "4x", "--", "true"],
            2,
            "\"4x\" is not a memory size (use e.g. 512m, 4g, 2Gi)",
        ),
        (
            vec!["submit", "--env", "NOEQUALS", "--", "true"],
            2,
            "\"NOEQUALS\" is not KEY=VALUE",
        ),
        (
            vec!["submit", "--bogus", "--", "true"],
            2,
            "unexpected argument '--bogus'",
        ),
        (
            vec!["submit", "--", ""],
            1,
            "error: command: must not be empty",
        ),
        (
            vec!["submit", "--env", "HEARTH_X=1", "--", "true"],
            1,
            "error: env: HEARTH_X is set by the worker; HEARTH_* names are reserved",
        ),
        (
            vec!["status", "driver-20991231000000-0042"],
            1,
            "not found: no driver driver-20991231000000-0042",
        ),
        (
            vec!["status", "bogus"],
            1,
            "invalid argument: driver_id: \"bogus\" is not a driver id",
        ),
        (
            vec!["kill", "driver-20991231000000-0042"],
            1,
            "no driver driver-20991231000000-0042",
        ),
        (
            vec!["logs", "driver-20991231000000-0042"],
            1,
            "no driver driver-20991231000000-0042",
        ),
    ] {
        let out = cluster.hearth(&args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty(), "{args:?} printed {}", stdout(&out));
    }
    let out = cluster.hearth(&["submit", "--"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "an empty command: {}",
        stderr(&out)
    );

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

/// Rotating the secret without downtime: a master given the new secret and the previous one
/// accepts both (gRPC, the UI's `--ui-auth`, its kill form), so workers and clients move over
/// one by one; any other secret is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_rotation_the_old_and_the_new_secret_both_work() {
    let old = "old-secret-7c1e";
    let dir = tempfile::tempdir().expect("temp dir");
    let previous = dir.path().join("previous");
    std::fs::write(&previous, format!("{old}\n")).expect("write the previous secret");
    let mut cluster = Cluster::start_with(support::MasterOptions {
        secret: Some("new-secret-52ab".into()),
        extra: vec![
            "--previous-secret-file".into(),
            previous.display().to_string(),
            "--ui-auth".into(),
        ],
        ..Default::default()
    });
    // A worker still on the old secret registers.
    let current = cluster.secret.replace(old.to_string());
    let worker = cluster.spawn_worker(1, "256m", &[]);
    cluster.secret = current;
    cluster
        .wait_worker(
            &worker,
            hearth_common::proto::WorkerState::Alive,
            Duration::from_secs(10),
        )
        .await;
    let run = |secret: &str| {
        support::output_within(
            Command::new(HEARTH)
                .args(["list", "workers", "--master", &cluster.url])
                .env_remove("HEARTH_SECRET_FILE")
                .env("HEARTH_SECRET", secret),
            support::CLI_LIMIT,
        )
    };
    for secret in [old, "new-secret-52ab"] {
        let out = run(secret);
        assert!(out.status.success(), "{secret}: {}", stderr(&out));
    }
    let out = run("neither");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("wrong secret"), "{}", stderr(&out));

    for (secret, status) in [(old, 200), ("new-secret-52ab", 200), ("neither", 401)] {
        let bearer = format!("Bearer {secret}");
        let (code, _, _) = support::http_request(
            &cluster.web,
            "GET",
            "/json/",
            &[("Authorization", &bearer)],
            "",
        );
        assert_eq!(code, status, "UI with {secret}");
    }
}
