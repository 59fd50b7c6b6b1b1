//! Plain HTTP requests to a web port (`host:port`), answered with status, headers and body
//! whatever the status: tests look at 401s and 404s as much as at 200s.

use std::time::Duration;

use crate::{Error, Result};

/// An answer: its status, its head as `name: value` lines (lower-case names) and its body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    /// The value of header `name` (any case), if the answer has it.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n == name).then(|| v.trim())
        })
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_redirects(0)
        .build()
        .into()
}

/// `method http://host_port/path` with extra `headers` and `body`.
pub fn request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<Reply> {
    let url = format!("http://{host_port}{path}");
    let fail = |reason: String| Error::Http {
        method: method.to_string(),
        url: url.clone(),
        reason,
    };
    let mut builder = ureq::http::Request::builder().method(method).uri(&url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(body.to_string())
        .map_err(|e| fail(e.to_string()))?;
    let mut response = agent().run(request).map_err(|e| fail(e.to_string()))?;
    let status = response.status().as_u16();
    let head = response
        .headers()
        .iter()
        .map(|(name, value)| format!("{}: {}", name, value.to_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join("\n");
    // Logs are served as they were written, which need not be UTF-8.
    let bytes = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()
        .map_err(|e| fail(e.to_string()))?;
    let body = String::from_utf8_lossy(&bytes).into_owned();
    Ok(Reply { status, head, body })
}

/// `GET http://host_port/path`: status and body.
pub fn get(host_port: &str, path: &str) -> Result<(u16, String)> {
    request(host_port, "GET", path, &[], "").map(|r| (r.status, r.body))
}
