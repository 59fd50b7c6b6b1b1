//! The master's HTTP side on port 8080: pages for people, JSON for programs, probes and metrics.
//!
//! - [`pages`]: the overview and the worker, driver and application pages.
//! - [`queue_page`]: the queues, their bars and what waits in each.
//! - [`logs`]: a driver's or executor's stdout/stderr, read from its worker or kept by the
//!   master.
//! - [`driver_ui`]: a running driver's own web UI, through a tunnel its worker opens.
//! - [`actions`]: kill buttons (POST, off unless `--ui-kill`, secret required).
//! - [`auth`]: `--ui-auth`, the secret asked of every request but the probes.
//! - [`api`], [`metrics`]: JSON and Prometheus text.
//! - [`rows`], [`paging`], [`chart`]: what pages are made of.

mod actions;
mod api;
mod auth;
mod chart;
mod driver_ui;
mod logs;
mod metrics;
mod pages;
mod paging;
mod queue_page;
mod rows;

use axum::{
    Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{any, get, post},
};
use hearth_common::{Shutdown, bounded_http};

use crate::{actor::MasterHandle, error::Error, listen::Listener};

pub use pages::{BesideState, OverviewQuery, overview_html};

/// Largest request body the web side reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Everything but the probes, at `prefix` (empty, or the UI's base path).
fn ui_routes(prefix: &str) -> Router<MasterHandle> {
    let at = |path: &str| format!("{prefix}{path}");
    let mut router = Router::new()
        .route(&at("/"), get(pages::overview))
        .route(&at("/workers/{id}"), get(pages::worker))
        .route(&at("/drivers/{id}"), get(pages::driver))
        .route(&at("/drivers/{id}/logs/{stream}"), get(logs::driver_log))
        .route(&at("/drivers/{id}/kill"), post(actions::kill_driver))
        .route(&at("/drivers/{id}/ui"), get(driver_ui::add_slash))
        .route(&at("/drivers/{id}/ui/"), any(driver_ui::root))
        .route(&at("/drivers/{id}/ui/{*rest}"), any(driver_ui::rest))
        .route(&at("/apps/{id}"), get(pages::app))
        .route(
            &at("/apps/{id}/executors/{executor}/logs/{stream}"),
            get(logs::executor_log),
        )
        .route(&at("/apps/{id}/kill"), post(actions::kill_app))
        .route(&at("/queues"), get(queue_page::queues))
        .route(&at("/json"), get(api::spark_json))
        .route(&at("/json/"), get(api::spark_json))
        .route(&at("/json/{field}"), get(api::spark_json_field))
        .route(&at("/api/v1/workers"), get(api::workers))
        .route(&at("/api/v1/workers/{id}"), get(api::worker))
        .route(&at("/api/v1/drivers"), get(api::drivers))
        .route(&at("/api/v1/drivers/{id}"), get(api::driver))
        .route(&at("/api/v1/apps"), get(api::apps))
        .route(&at("/api/v1/apps/{id}"), get(api::app))
        .route(&at("/api/v1/queues"), get(api::queues))
        .route(&at("/api/v1/queues/{name}"), get(api::queue))
        .route(&at("/metrics"), get(metrics::metrics));
    if !prefix.is_empty() {
        router = router.route(prefix, get(pages::overview));
    }
    router
}

tokio::task_local! {
    /// The prefix a path-stripping proxy in front named for this request.
    static FORWARDED_BASE: String;
}

/// The base path this request's links carry: `--ui-base-path` when set, else the prefix a
/// path-stripping proxy (an ingress, a gateway) names in `X-Forwarded-Prefix`, else none. With
/// it the UI works behind such a proxy without configuration.
pub fn base(master: &MasterHandle) -> String {
    if !master.config.ui.base_path.is_empty() {
        return master.config.ui.base_path.clone();
    }
    FORWARDED_BASE.try_with(Clone::clone).unwrap_or_default()
}

/// Reads `X-Forwarded-Prefix` for [`base`]; a value that is not a sound base path is ignored.
async fn forwarded_prefix(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let prefix = request
        .headers()
        .get("x-forwarded-prefix")
        .and_then(|v| v.to_str().ok())
        .and_then(|raw| crate::config::ui_base_path(raw).ok())
        .unwrap_or_default();
    FORWARDED_BASE.scope(prefix, next.run(request)).await
}

pub fn router(master: MasterHandle) -> Router {
    let base = master.config.ui.base_path.clone();
    // Served at the root and under the base path, so the UI works whether or not the proxy
    // in front strips the prefix; links always carry it.
    let mut ui = ui_routes("");
    if !base.is_empty() {
        ui = ui.merge(ui_routes(&base));
    }
    if master.config.ui.auth {
        ui = ui.layer(axum::middleware::from_fn_with_state(
            master.clone(),
            auth::require_secret,
        ));
    }
    if base.is_empty() {
        ui = ui.layer(axum::middleware::from_fn(forwarded_prefix));
    }
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(ui)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(guard_headers))
        .with_state(master)
}

/// No page may be framed by another site (a kill button under someone else's overlay), and
/// no answer is sniffed into another type. A driver UI's own policy, if it sets one, stands.
async fn guard_headers(mut response: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = response.headers_mut();
    headers
        .entry(header::X_FRAME_OPTIONS)
        .or_insert(HeaderValue::from_static("DENY"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static("frame-ancestors 'none'"));
    headers
        .entry(header::X_CONTENT_TYPE_OPTIONS)
        .or_insert(HeaderValue::from_static("nosniff"));
    response
}

/// Ready while serving: the ports are bound and the state actor started before this router
/// runs; not ready once shutting down.
async fn readyz(axum::extract::State(master): axum::extract::State<MasterHandle>) -> Response {
    if master.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if !master.leadership.acting() {
        (StatusCode::SERVICE_UNAVAILABLE, "no longer the leader\n").into_response()
    } else if let Some(why) = master.store_trouble.get() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the state file cannot be written, changes are refused: {why}\n"),
        )
            .into_response()
    } else {
        "ready\n".into_response()
    }
}

/// Serves the UI, JSON, probes and metrics on `listener` until `shutdown`, with the
/// connection limits of [`hearth_common::bounded_http`].
pub async fn serve(
    master: MasterHandle,
    listener: Listener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let max = master.config.ui.max_connections;
    let incoming = match listener {
        Listener::Plain(l) => bounded_http::Incoming::Plain(l),
        Listener::Tls(accepted) => bounded_http::Incoming::Accepted(accepted),
    };
    bounded_http::serve(incoming, router(master), max, shutdown).await
}

/// The HTTP status an error answers with.
fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::FailedPrecondition(_) | Error::AlreadyExists(_) => StatusCode::CONFLICT,
        Error::Unavailable(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        let body = serde_json::json!({ "error": self.to_string(), "status": status.as_u16() });
        (status, axum::Json(body)).into_response()
    }
}
