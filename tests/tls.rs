//! TLS on both of the master's ports: workers, the `hearth` command, drivers and browsers reach
//! it only with the right CA; a renewed certificate is served without a restart; a broken one
//! keeps the master from starting.

mod support;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use hearth_common::proto::WorkerState;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use support::{Cluster, HEARTH, MasterOptions, stderr, stdout};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A CA and a server certificate it signed for `localhost` and `127.0.0.1`, as PEM files in
/// `dir` named `{name}-ca.pem`, `{name}-cert.pem` and `{name}-key.pem`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

/// Replaces `to` with `from` in one rename, as a Kubernetes Secret volume swaps its files.
fn replace(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

fn tls_master(pki: &Pki) -> Cluster {
    let mut cluster = Cluster::start_with(MasterOptions {
        extra: vec![
            "--tls-cert".into(),
            pki.cert.display().to_string(),
            "--tls-key".into(),
            pki.key.display().to_string(),
        ],
        ..Default::default()
    });
    cluster.tls_ca = Some(pki.ca.clone());
    cluster
}

/// One HTTP/1.1 GET over TLS, trusting only `ca`: the status and body, or the error.
async fn https_get(addr: &str, path: &str, ca: &Path) -> Result<(u16, String), String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| e.to_string())? {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = ServerName::try_from("127.0.0.1").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    tls.read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let response = String::from_utf8_lossy(&response).to_string();
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {response:?}"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// `hearth ARGS` with the cluster's secret and nothing else: no master URL or CA from the
/// environment.
fn hearth_bare(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    support::output_within(
        std::process::Command::new(HEARTH)
            .args(args)
            .env_remove("HEARTH_MASTER_URL")
            .env_remove("HEARTH_TLS_CA")
            .env(
                "HEARTH_SECRET",
                cluster.secret.as_deref().unwrap_or_default(),
            )
            .stdin(Stdio::null()),
        support::CLI_LIMIT,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_workers_clients_drivers_and_the_ui_and_refuses_the_untrusted() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path(), "one");
    let other = make_pki(certs.path(), "other");
    let mut cluster = tls_master(&pki);
    assert!(
        cluster.url.starts_with("https://127.0.0.1:"),
        "{}",
        cluster.url
    );
    let grpc_port = cluster.url.rsplit(':').next().unwrap().to_string();

    // A worker dials the master over TLS, trusting the CA from HEARTH_TLS_CA.
    let worker = cluster.add_worker(4, "4g").await;

    // The README's Pi: its driver registers an application through the client library, over
    // TLS with the CA the worker handed down, and its executors run.
    let pi = Path::new(HEARTH)
        .parent()
        .unwrap()
        .join("examples")
        .join("pi");
    assert!(pi.exists(), "the pi example is built: {}", pi.display());
    let out = cluster.hearth(&[
        "submit",
        "--wait",
        "--memory",
        "256m",
        "--",
        &pi.display().to_string(),
        "--executors",
        "2",
        "--samples",
        "1000000",
    ]);
    let id = stdout(&out).lines().next().unwrap_or_default().to_string();
    let logs = stdout(&cluster.hearth(&["logs", &id]));
    let errors = stdout(&cluster.hearth(&["logs", "--stderr", &id]));
    assert!(
        out.status.success(),
        "pi over TLS: {} / {logs} / {errors}",
        stderr(&out)
    );
    assert!(logs.starts_with("Pi is roughly 3.1"), "{logs} / {errors}");
    let driver = cluster.client().await.driver(&id).await.unwrap();
    let app_id = driver.app_id.clone();
    assert!(
        app_id.starts_with("app-"),
        "the driver registered an app: {driver:?}"
    );

    // The command with --tls-ca and an explicit https URL.
    let out = hearth_bare(
        &cluster,
        &[
            "list",
            "workers",
            "--master",
            &cluster.url,
            "--tls-ca",
            &pki.ca.display().to_string(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&worker), "{}", stdout(&out));

    // Refused: the system's roots, another CA, plain HTTP, and a CA with an http:// URL.
    let untrusted = hearth_bare(&cluster, &["list", "workers", "--master", &cluster.url]);
    assert!(!untrusted.status.success());
    assert!(
        stderr(&untrusted).contains("certificate"),
        "{}",
        stderr(&untrusted)
    );
    let wrong_ca = hearth_bare(
        &cluster,
        &[
            "list",
            "workers",
            "--master",
            &cluster.url,
            "--tls-ca",
            &other.ca.display().to_string(),
        ],
    );
    assert!(!wrong_ca.status.success());
    assert!(
        stderr(&wrong_ca).contains("certificate"),
        "{}",
        stderr(&wrong_ca)
    );
    let plain_url = format!("http://127.0.0.1:{grpc_port}");
    let started = std::time::Instant::now();
    let plain = hearth_bare(&cluster, &["list", "workers", "--master", &plain_url]);
    assert!(!plain.status.success(), "{}", stdout(&plain));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "plain HTTP/2 to the TLS port fails rather than hangs"
    );
    let mixed = hearth_bare(
        &cluster,
        &[
            "list",
            "workers",
            "--master",
            &plain_url,
            "--tls-ca",
            &pki.ca.display().to_string(),
        ],
    );
    assert!(!mixed.status.success());
    assert!(
        stderr(&mixed).contains("tls ca") && stderr(&mixed).contains("not https://"),
        "{}",
        stderr(&mixed)
    );
    let missing = certs.path().join("missing.pem");
    let unreadable = hearth_bare(
        &cluster,
        &[
            "list",
            "workers",
            "--master",
            &cluster.url,
            "--tls-ca",
            &missing.display().to_string(),
        ],
    );
    assert!(!unreadable.status.success());
    assert!(
        stderr(&unreadable).contains(&format!("tls ca {}: cannot read", missing.display())),
        "{}",
        stderr(&unreadable)
    );

    // The UI over HTTPS: the overview, the JSON naming the https URL, the probes.
    let (code, page) = https_get(&cluster.web, "/", &pki.ca).await.unwrap();
    assert_eq!(code, 200, "{page}");
    assert!(page.contains(&worker), "the overview lists the worker");
    let (code, json) = https_get(&cluster.web, "/json/", &pki.ca).await.unwrap();
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["url"], cluster.url.as_str(), "{json}");
    let (code, _) = https_get(&cluster.web, "/readyz", &pki.ca).await.unwrap();
    assert_eq!(code, 200);
    let refused = https_get(&cluster.web, "/", &other.ca).await.unwrap_err();
    assert!(refused.contains("certificate"), "{refused}");
    // Plain HTTP gets no HTTP answer (the connection ends in a TLS alert).
    let plain = support::try_http_get(&cluster.web, "/");
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");

    cluster
        .wait_worker(&worker, WorkerState::Alive, Duration::from_secs(1))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_without_a_restart_and_a_broken_one_is_not() {
    let certs = tempfile::tempdir().unwrap();
    let first = make_pki(certs.path(), "first");
    let renewed = make_pki(certs.path(), "renewed");
    // The files the master reads, as a mounted Secret would hold them.
    let live = Pki {
        ca: first.ca.clone(),
        cert: certs.path().join("tls.crt"),
        key: certs.path().join("tls.key"),
    };
    std::fs::copy(&first.cert, &live.cert).unwrap();
    std::fs::copy(&first.key, &live.key).unwrap();
    let mut cluster = tls_master(&live);
    let worker = cluster.add_worker(2, "1g").await;

    // A key that is not the certificate's: reported, and the old certificate stays.
    replace(&renewed.key, &live.key);
    support::wait_for("the mismatch reported", Duration::from_secs(10), || {
        let log = cluster.master_log();
        async move {
            (log.contains("keeping the current TLS certificate")
                && log.contains("does not belong to the certificate"))
            .then_some(())
        }
    })
    .await;
    let (code, _) = https_get(&cluster.web, "/readyz", &first.ca).await.unwrap();
    assert_eq!(code, 200, "the first certificate is still served");

    // The renewed pair: new connections get it, within a few seconds, with no restart.
    replace(&renewed.cert, &live.cert);
    support::wait_for(
        "the renewed certificate served",
        Duration::from_secs(10),
        || {
            let web = cluster.web.clone();
            let ca = renewed.ca.clone();
            async move { https_get(&web, "/readyz", &ca).await.ok() }
        },
    )
    .await;
    let old = https_get(&cluster.web, "/readyz", &first.ca)
        .await
        .unwrap_err();
    assert!(old.contains("certificate"), "{old}");
    assert!(cluster.master_log().contains("TLS certificate reloaded"));

    // The worker's connection made before the renewal goes on; so does the master's work.
    cluster.tls_ca = Some(renewed.ca.clone());
    cluster
        .wait_worker(&worker, WorkerState::Alive, Duration::from_secs(1))
        .await;
    let out = cluster.hearth(&["submit", "--wait", "--memory", "64m", "--", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_master_with_a_missing_or_broken_certificate_does_not_start() {
    let certs = tempfile::tempdir().unwrap();
    let pki = make_pki(certs.path(), "one");
    let other = make_pki(certs.path(), "other");
    let garbage = certs.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let missing = certs.path().join("missing.pem");
    let state = tempfile::tempdir().unwrap();
    let start = |args: &[&Path], flags: &[&str]| {
        let mut cmd = support::master_command(state.path());
        cmd.env("HEARTH_SECRET", "s3cret-for-tls")
            .env_remove("HEARTH_TLS_CERT")
            .env_remove("HEARTH_TLS_KEY");
        for (flag, path) in flags.iter().zip(args) {
            cmd.arg(flag).arg(path);
        }
        let out = support::output_within(&mut cmd, support::CLI_LIMIT);
        // A flag missing its partner is the command line's error (2); a file the master cannot
        // use is the master's (1).
        let expected = if flags.len() == 1 { 2 } else { 1 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "started with {flags:?} {args:?}: {}",
            stderr(&out)
        );
        stderr(&out)
    };
    let both = ["--tls-cert", "--tls-key"];

    let alone = start(&[&pki.cert], &["--tls-cert"]);
    assert!(alone.contains("--tls-key"), "{alone}");
    let text = start(&[&missing, &pki.key], &both);
    assert!(
        text.contains(&format!("tls cert {}: cannot read", missing.display())),
        "{text}"
    );
    let text = start(&[&pki.cert, &missing], &both);
    assert!(
        text.contains(&format!("tls key {}: cannot read", missing.display())),
        "{text}"
    );
    let text = start(&[&garbage, &pki.key], &both);
    assert!(
        text.contains(&format!(
            "tls cert {}: holds no CERTIFICATE",
            garbage.display()
        )),
        "{text}"
    );
    let text = start(&[&pki.cert, &garbage], &both);
    assert!(
        text.contains(&format!(
            "tls key {}: not a PEM private key",
            garbage.display()
        )),
        "{text}"
    );
    let text = start(&[&pki.cert, &other.key], &both);
    assert!(
        text.contains(&format!(
            "tls key {}: does not belong to the certificate",
            other.key.display()
        )),
        "{text}"
    );
}
