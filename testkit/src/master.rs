//! `hearth master` started as a process on loopback, and what its first line says.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::{
    Error, Result,
    process::{Proc, first_line, hearth_command},
};

/// How a master is started.
#[derive(Debug, Clone)]
pub struct MasterSpawn {
    /// The `hearth` binary.
    pub binary: PathBuf,
    pub state_dir: PathBuf,
    /// The address to listen on (loopback unless other hosts must reach it).
    pub bind: String,
    /// gRPC and web ports; 0 picks free ones.
    pub ports: (u16, u16),
    /// The shared secret, or `None` for `--insecure`.
    pub secret: Option<String>,
    pub extra: Vec<String>,
    /// Where its stderr (the log) goes.
    pub log: PathBuf,
}

/// A running master: the process, the URL workers and clients use, its web `host:port`.
#[derive(Debug)]
pub struct MasterProcess {
    pub proc: Proc,
    pub url: String,
    pub web: String,
}

/// Where [`free_port`] hands out ports: below the kernel's ephemeral range (32768 and up), which
/// outgoing connections draw their local ports from, and below Kubernetes' NodePorts (30000 and
/// up). A port from `bind(0)` is an ephemeral one, and between its release and the caller's own
/// bind any outgoing connection (there are many in a test run) may take it.
const PORTS: std::ops::Range<u16> = 20_000..30_000;

/// A port nobody listens on now (the caller binds it right after), never the same twice in
/// one process.
pub fn free_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS.end - PORTS.start);
    // Processes started together begin at different places.
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = PORTS.start + ((start + n) % span) as u16;
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::io("finding a free port")(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("every port in {PORTS:?} is taken"),
    )))
}

impl MasterSpawn {
    /// `hearth master` with these settings and nothing from the caller's `HEARTH_*`.
    pub fn command(&self) -> Command {
        let mut cmd = hearth_command(&self.binary);
        cmd.args(["master", "--port", &self.ports.0.to_string()])
            .args(["--webui-port", &self.ports.1.to_string()])
            .args(["--bind", &self.bind])
            .arg("--state-dir")
            .arg(&self.state_dir)
            .args(&self.extra);
        match &self.secret {
            Some(s) => cmd.env("HEARTH_SECRET", s),
            None => cmd.arg("--insecure"),
        };
        cmd
    }

    /// Starts it and waits (up to 20 s) for its first line, which names its URL and web UI.
    pub fn start(&self) -> Result<MasterProcess> {
        let log = std::fs::File::create(&self.log)
            .map_err(Error::io(format!("creating {}", self.log.display())))?;
        let mut child = self
            .command()
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(Error::io(format!(
                "starting {} master",
                self.binary.display()
            )))?;
        let line = first_line(&mut child, "hearth master:", Duration::from_secs(20));
        let proc = Proc::new(child, "master");
        let (url, web) = parse_first_line(&line?)?;
        Ok(MasterProcess { proc, url, web })
    }
}

/// `hearth master: ... (URL) ... web UI on http://HOST:PORT`: the URL and `HOST:PORT`.
fn parse_first_line(line: &str) -> Result<(String, String)> {
    let url = line
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(url, _)| url.to_string())
        .ok_or_else(|| Error::Unexpected(format!("no URL in {line:?}")))?;
    let web = line
        .rsplit_once("web UI on ")
        .map(|(_, w)| {
            let w = w.trim();
            w.strip_prefix("https://")
                .or_else(|| w.strip_prefix("http://"))
                .unwrap_or(w)
                .to_string()
        })
        .ok_or_else(|| Error::Unexpected(format!("no web address in {line:?}")))?;
    Ok((url, web))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_line_gives_the_url_and_the_web_address() {
        let line = "hearth master: gRPC on 0.0.0.0:7077 (http://127.0.0.1:7077), web UI on https://127.0.0.1:8080";
        assert_eq!(
            parse_first_line(line).unwrap(),
            ("http://127.0.0.1:7077".into(), "127.0.0.1:8080".into())
        );
        assert!(parse_first_line("hearth master: nothing").is_err());
    }
}
