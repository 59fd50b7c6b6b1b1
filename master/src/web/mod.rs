//! The master's HTTP side on port 8080: pages for people, JSON for programs, probes and metrics.

mod api;
mod metrics;
mod pages;

use axum::{
    Router,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use hearth_common::Shutdown;
use tokio::net::TcpListener;

use crate::{actor::MasterHandle, error::Error};

/// Largest request body the web side reads.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub fn router(master: MasterHandle) -> Router {
    Router::new()
        .route("/", get(pages::overview))
        .route("/workers/{id}", get(pages::worker))
        .route("/drivers/{id}", get(pages::driver))
        .route("/apps/{id}", get(pages::app))
        .route("/json", get(api::spark_json))
        .route("/json/", get(api::spark_json))
        .route("/api/v1/workers", get(api::workers))
        .route("/api/v1/workers/{id}", get(api::worker))
        .route("/api/v1/drivers", get(api::drivers))
        .route("/api/v1/drivers/{id}", get(api::driver))
        .route("/api/v1/apps", get(api::apps))
        .route("/api/v1/apps/{id}", get(api::app))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(master)
}

/// Ready while serving: the ports are bound and the state actor started before this router
/// runs; not ready once shutting down.
async fn readyz(axum::extract::State(master): axum::extract::State<MasterHandle>) -> Response {
    if master.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        "ready\n".into_response()
    }
}

pub async fn serve(
    master: MasterHandle,
    listener: TcpListener,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    axum::serve(listener, router(master))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = match &self {
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::FailedPrecondition(_) => StatusCode::CONFLICT,
            Error::Unavailable(_) | Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            Error::ResourceExhausted(_) => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = serde_json::json!({ "error": self.to_string(), "status": status.as_u16() });
        (status, axum::Json(body)).into_response()
    }
}
