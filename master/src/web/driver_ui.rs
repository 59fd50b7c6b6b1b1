//! A driver's own web UI (Spark's on 4040, Jupyter, a Dask dashboard) at `/drivers/{id}/ui/`,
//! while the driver runs: each request goes through a tunnel the driver's worker opens (see
//! [`crate::tunnels`]), so a browser needs the master's address only.
//!
//! Bodies pass untouched both ways, streamed; websockets are joined end to end. The prefix is
//! taken off the path unless the driver asked to keep it, and the usual forwarded headers say
//! where the UI is seen: `X-Forwarded-Prefix` (the driver's `HEARTH_UI_BASE`),
//! `X-Forwarded-Host` and `X-Forwarded-Proto`. Under `--ui-auth` the browser's credentials for
//! the master are not passed on to the driver.

use axum::{
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version, header},
    response::{IntoResponse, Redirect, Response},
};
use hearth_common::{
    ids::{IdKind, check_id},
    proto::DriverState,
    state_names::StateName,
};
use hyper_util::rt::TokioIo;

use super::{pages::error_page, status_of};
use crate::{actor::MasterHandle, error::Error};

/// How long a driver's UI has to start its answer (its headers; the body may stream on).
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Headers that belong to one connection, never passed on (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// `/drivers/{id}/ui` → `/drivers/{id}/ui/`, so the UI's relative links resolve under it.
pub async fn add_slash(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
    uri: Uri,
) -> Response {
    let base = &super::base(&master);
    if let Err(e) = check_id("driver", &id, IdKind::Driver) {
        let e = Error::from(e);
        return error_page(base, status_of(&e), e.to_string());
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    Redirect::permanent(&format!("{base}/drivers/{id}/ui/{query}")).into_response()
}

pub async fn root(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    forward(&master, &id, "", request).await
}

pub async fn rest(
    State(master): State<MasterHandle>,
    Path((id, rest)): Path<(String, String)>,
    request: Request,
) -> Response {
    forward(&master, &id, &rest, request).await
}

async fn forward(master: &MasterHandle, id: &str, rest: &str, mut request: Request) -> Response {
    let base = super::base(master);
    let fail = |e: Error| error_page(&base, status_of(&e), e.to_string());
    if let Err(e) = check_id("driver", id, IdKind::Driver) {
        return fail(e.into());
    }
    let (worker_id, port, keep_prefix) = match where_it_runs(master, id) {
        Ok(found) => found,
        Err(e) => return fail(e),
    };
    let public = format!("{base}/drivers/{id}/ui");
    let path = if keep_prefix {
        format!("{public}/{rest}")
    } else {
        format!("/{rest}")
    };
    let target = match request.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let Ok(target) = target.parse::<Uri>() else {
        return fail(Error::Invalid(hearth_common::error::InvalidInput::new(
            "path",
            "not a path a driver UI can be asked for",
        )));
    };

    let pipe = match master
        .tunnels
        .open(&master.links, &worker_id, id, port)
        .await
    {
        Ok(pipe) => pipe,
        Err(e) => return fail(e),
    };
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(pipe)).await {
            Ok(pair) => pair,
            Err(e) => return fail(Error::Unavailable(format!("{id}'s UI: {e}"))),
        };
    tokio::spawn(async move {
        let _ = connection.with_upgrades().await;
    });

    let upgrade = request.headers().get(header::UPGRADE).cloned();
    let downstream = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut request));
    let host = request.headers().get(header::HOST).cloned().or_else(|| {
        request
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let (parts, body) = request.into_parts();
    let mut upstream = http::Request::new(body);
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = target;
    *upstream.version_mut() = Version::HTTP_11;
    let headers = upstream.headers_mut();
    copy_end_to_end(&parts.headers, headers);
    if master.config.ui.auth {
        // The master's secret is for the master: a driver's UI never sees it.
        headers.remove(header::AUTHORIZATION);
    }
    if let Some(host) = host {
        headers.insert(header::HOST, host.clone());
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Ok(prefix) = HeaderValue::from_str(&public) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), prefix);
    }
    let proto = if master.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static(proto),
    );
    if let Some(upgrade) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, upgrade);
    }

    let answer = tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(upstream)).await;
    let mut response = match answer {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            return fail(Error::Unavailable(format!(
                "{id}'s UI closed the connection without answering: {e}"
            )));
        }
        Err(_) => {
            return fail(Error::Unavailable(format!(
                "{id}'s UI did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            )));
        }
    };
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(downstream) = downstream {
            let upstream = hyper::upgrade::on(&mut response);
            let driver_id = id.to_string();
            tokio::spawn(async move {
                let (Ok(down), Ok(up)) = tokio::join!(downstream, upstream) else {
                    tracing::debug!(driver_id, "driver UI upgrade not completed");
                    return;
                };
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(down), &mut TokioIo::new(up))
                        .await;
            });
        }
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = response.into_parts();
    let mut headers = HeaderMap::new();
    copy_end_to_end(&parts.headers, &mut headers);
    parts.headers = headers;
    Response::from_parts(parts, Body::new(body))
}

/// The driver's worker, UI port and whether it keeps the prefix, if its UI can be reached now.
fn where_it_runs(master: &MasterHandle, id: &str) -> Result<(String, u32, bool), Error> {
    let snap = master.snapshot();
    let driver = snap.driver(id)?;
    if driver.spec.ui_port == 0 {
        return Err(Error::NotFound(format!(
            "{id} has no web UI: it was submitted without --ui-port"
        )));
    }
    match (&driver.worker_id, driver.state) {
        (Some(worker_id), DriverState::Running) => Ok((
            worker_id.clone(),
            driver.spec.ui_port,
            driver.spec.ui_keep_prefix,
        )),
        (_, state) => Err(Error::Unavailable(format!(
            "{id} is {}: its UI is served only while it runs",
            state.name()
        ))),
    }
}

/// Copies every header but those of one connection (and those `Connection` names).
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || n == "upgrade" || named.iter().any(|c| c == n) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_stay_behind_and_the_rest_go_on() {
        let mut from = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-private"),
            ("x-private", "secret"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("cookie", "a=1"),
            ("accept", "text/html"),
        ] {
            from.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        let mut names: Vec<_> = to.keys().map(|k| k.as_str().to_string()).collect();
        names.sort();
        assert_eq!(names, ["accept", "cookie"]);
    }
}
