//! The worker's small HTTP side on port 8081: probes, metrics and a status page.
//!
//! `/healthz` says the process is up and never depends on the master; `/readyz` says the
//! worker is registered with a master, so a Service or rollout waits for it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use hearth_common::{Shutdown, resources::format_mb};
use tokio::net::TcpListener;

use crate::{connection::Identity, runner::Runner};

#[derive(Clone)]
pub struct WebState {
    pub identity: Identity,
    pub master_url: String,
    pub registered: Arc<AtomicBool>,
    pub runner: Runner,
}

/// Connections the worker's port keeps open at once.
const MAX_CONNECTIONS: usize = 64;

pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

pub async fn serve(
    listener: TcpListener,
    state: WebState,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    // Probes and scrapes only: a few connections at a time, each with the header deadline.
    hearth_common::bounded_http::serve(
        hearth_common::bounded_http::Incoming::<tokio::net::TcpStream>::Plain(listener),
        router(state),
        MAX_CONNECTIONS,
        shutdown,
    )
    .await
}

async fn readyz(State(s): State<WebState>) -> Response {
    if s.registered.load(Ordering::Relaxed) {
        "registered\n".into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not registered with the master at {}\n", s.master_url),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<WebState>) -> impl IntoResponse {
    let (drivers, executors) = s.runner.counts();
    let body = format!(
        "# HELP hearth_worker_registered Whether the worker is registered with a master.\n\
         # TYPE hearth_worker_registered gauge\nhearth_worker_registered {}\n\
         # HELP hearth_worker_cores Cores offered.\n# TYPE hearth_worker_cores gauge\nhearth_worker_cores {}\n\
         # HELP hearth_worker_memory_mb Memory offered, MiB.\n# TYPE hearth_worker_memory_mb gauge\nhearth_worker_memory_mb {}\n\
         # HELP hearth_worker_drivers_running Drivers running here.\n# TYPE hearth_worker_drivers_running gauge\nhearth_worker_drivers_running {}\n\
         # HELP hearth_worker_executors_running Executors running here.\n# TYPE hearth_worker_executors_running gauge\nhearth_worker_executors_running {}\n",
        u8::from(s.registered.load(Ordering::Relaxed)),
        s.identity.cores,
        s.identity.memory_mb,
        drivers,
        executors,
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

async fn page(State(s): State<WebState>) -> Html<String> {
    let registered = if s.registered.load(Ordering::Relaxed) {
        "registered"
    } else {
        "not registered"
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{id}</title></head>\
         <body><h1>Hearth worker {id}</h1><ul><li>Master: {master} ({registered})</li>\
         <li>Offers: {cores} cores, {memory}</li><li>Drivers running: {drivers}</li><li>Executors running: {executors}</li></ul>\
         <p>The cluster's pages are on the master's web UI.</p></body></html>",
        id = escape(&s.identity.worker_id),
        master = escape(&s.master_url),
        cores = s.identity.cores,
        memory = format_mb(s.identity.memory_mb),
        drivers = s.runner.counts().0,
        executors = s.runner.counts().1,
    ))
}
