//! A master waiting to lead: it looks at the Lease every retry period, follows the leader it
//! names into its own state file, and serves a page (and `/json/`, `/metrics`, probes) saying
//! it is the standby and who leads. It is never ready, so Services route to the leader alone.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use hearth_common::{Shutdown, client::ClientTls};
use tokio::sync::watch;

use super::{
    election::{Elector, Seen, Step, Term},
    follower::{self, FollowStatus},
};
use crate::{config::MasterConfig, error::Error, store::Store};

/// What the standby's pages show.
#[derive(Debug, Clone, Default)]
struct Shown {
    seen: Seen,
    follow: FollowStatus,
    me: String,
}

type Status = (watch::Receiver<Seen>, watch::Receiver<FollowStatus>, String);

/// Waits until this process may lead, following the leader meanwhile. `None`: shut down
/// first. The web port is bound while waiting and released before returning.
pub async fn wait_to_lead(
    config: &MasterConfig,
    elector: &mut Elector,
    shutdown: &Shutdown,
) -> Result<Option<Term>, Error> {
    let retry = elector.config().retry_period;
    // The first look decides at once whether a standby is needed at all.
    let mut seen = match elector.step(false).await {
        Ok(Step::Lead(term)) => return Ok(Some(*term)),
        Ok(Step::Follow(seen)) => seen,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the lease; looking again");
            Seen::default()
        }
    };
    tracing::info!(leader = ?seen.leader(), epoch = seen.epoch, "standing by");
    let (seen_tx, seen_rx) = watch::channel(seen.clone());
    let (follow_tx, follow_rx) = watch::channel(FollowStatus::default());
    let listener = tokio::net::TcpListener::bind(config.web_addr)
        .await
        .map_err(|source| Error::Bind {
            what: "web UI",
            addr: config.web_addr,
            source,
        })?;
    let stop_web = Shutdown::new();
    let web = tokio::spawn({
        let app = pages(&config.ui.base_path).with_state((seen_rx, follow_rx, elector.me.clone()));
        let stop = stop_web.clone();
        async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        }
    });
    let store = Arc::new(crate::store::Store::open(&config.state_dir)?.0);
    let stop_follow = Shutdown::new();
    let mut following: Option<(String, tokio::task::JoinHandle<()>)> = None;
    let won = loop {
        // Follow whoever the Lease names, from the start again whenever that changes or ends.
        let url = seen.leader_url.clone();
        let restart = match (&following, &url) {
            (Some((at, task)), Some(url)) => at != url || task.is_finished(),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if let (true, Some(url)) = (restart, url) {
            following = Some((
                url.clone(),
                tokio::spawn(follow_until_stopped(
                    url,
                    config.secret.clone(),
                    elector.me.clone(),
                    store.clone(),
                    follow_tx.clone(),
                    stop_follow.clone(),
                )),
            ));
        }
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            _ = tokio::time::sleep(retry) => {}
        }
        let whole = follow_tx.borrow().applied.is_some();
        match elector.step(whole).await {
            Ok(Step::Lead(term)) => break Some(*term),
            Ok(Step::Follow(now)) => {
                if now != seen {
                    seen_tx.send_replace(now.clone());
                }
                seen = now;
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the lease; looking again"),
        }
    };
    stop_follow.cancel();
    if let Some((_, task)) = following {
        let _ = task.await;
    }
    stop_web.cancel();
    let _ = web.await;
    // Closed before the master opens it again as the leader.
    drop(store);
    Ok(won)
}

async fn follow_until_stopped(
    url: String,
    secret: Option<hearth_common::auth::Secret>,
    me: String,
    store: Arc<Store>,
    status: watch::Sender<FollowStatus>,
    stop: Shutdown,
) {
    let tls = ClientTls::from_env();
    if let Err(e) = follower::follow(&url, secret.as_ref(), &tls, &me, &store, &status, &stop).await
    {
        tracing::warn!(leader = url, error = %e, "stopped following the leader");
        // What was applied stays: a leader gone after the snapshot leaves a whole copy.
        status.send_modify(|s| s.error = Some(e.to_string()));
        // Not at once again: the leader may be going away.
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

fn pages(base: &str) -> Router<Status> {
    let mut router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(not_ready))
        .route("/metrics", get(metrics));
    let prefixes: &[&str] = if base.is_empty() { &[""] } else { &["", base] };
    for prefix in prefixes {
        router = router
            .route(&format!("{prefix}/"), get(page))
            .route(&format!("{prefix}/json"), get(json))
            .route(&format!("{prefix}/json/"), get(json));
    }
    router
}

fn shown(state: &Status) -> Shown {
    Shown {
        seen: state.0.borrow().clone(),
        follow: state.1.borrow().clone(),
        me: state.2.clone(),
    }
}

async fn not_ready() -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, "standby: not the leader\n").into_response()
}

async fn page(State(state): State<Status>) -> Html<String> {
    let s = shown(&state);
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    };
    let leader = s.seen.leader().map_or("nobody yet".to_string(), esc);
    let sync = if s.seen.in_sync.as_deref() == Some(s.me.as_str()) {
        "in sync: it may take over"
    } else if s.follow.applied.is_some() {
        "catching up"
    } else {
        "not in sync"
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Hearth master (standby)</title></head>\
         <body><h1>Hearth master: standby</h1>\
         <p>This master is the <strong>standby</strong>. The leader is <strong>{leader}</strong> (epoch {epoch}).</p>\
         <p>Its copy of the state: {sync}; last turn applied: {applied}.</p>\
         {error}</body></html>\n",
        epoch = s.seen.epoch,
        applied = s
            .follow
            .applied
            .map_or("none".to_string(), |a| a.to_string()),
        error = s.follow.error.as_deref().map_or(String::new(), |e| format!(
            "<p>Last trouble: {}</p>",
            esc(e)
        )),
    ))
}

async fn json(State(state): State<Status>) -> axum::Json<serde_json::Value> {
    let s = shown(&state);
    axum::Json(serde_json::json!({
        "role": "standby",
        "status": "STANDBY",
        "leader": s.seen.leader(),
        "epoch": s.seen.epoch,
        "inSync": s.seen.in_sync.as_deref() == Some(s.me.as_str()),
        "appliedTurn": s.follow.applied,
    }))
}

async fn metrics(State(state): State<Status>) -> String {
    let s = shown(&state);
    format!(
        "# HELP hearth_leader Whether this master leads (1) or stands by (0).\n\
         # TYPE hearth_leader gauge\nhearth_leader 0\n\
         # HELP hearth_leader_epoch The current leader's term, from the Lease.\n\
         # TYPE hearth_leader_epoch gauge\nhearth_leader_epoch {}\n\
         # HELP hearth_standby_in_sync Whether the Lease names this standby as in sync.\n\
         # TYPE hearth_standby_in_sync gauge\nhearth_standby_in_sync {}\n",
        s.seen.epoch,
        u8::from(s.seen.in_sync.as_deref() == Some(s.me.as_str())),
    )
}
