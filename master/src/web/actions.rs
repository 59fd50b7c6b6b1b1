//! Kill buttons. Off unless the master runs with `--ui-kill`; each kill is a POST carrying the
//! shared secret typed into the form, which also stops another site from posting one through
//! a signed-in browser (it cannot know the secret).

use axum::{
    Form,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use hearth_common::ids::{IdKind, check_id};
use serde::Deserialize;

use super::{pages::error_page, status_of};
use crate::{actor::MasterHandle, command::Command, error::Error};

#[derive(Deserialize)]
pub struct KillForm {
    #[serde(default)]
    secret: String,
}

/// Whether a kill may go ahead: enabled, and the secret given matches.
fn allowed(master: &MasterHandle, form: &KillForm) -> Result<(), (StatusCode, String)> {
    if !master.config.ui.kill {
        return Err((
            StatusCode::FORBIDDEN,
            "killing from the UI is off: start the master with --ui-kill to allow it, or use \
             `hearth kill`"
                .into(),
        ));
    }
    let check = master.config.secret_check();
    match &master.config.secret {
        Some(_) if check.accepts(form.secret.as_bytes()) => Ok(()),
        _ => Err((
            StatusCode::FORBIDDEN,
            "secret: it is not the cluster's shared secret; nothing was killed".into(),
        )),
    }
}

fn see_other(location: String) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, location)]).into_response()
}

pub async fn kill_driver(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
    Form(form): Form<KillForm>,
) -> Response {
    let handle = master.clone();
    kill_from_ui(
        &master,
        &form,
        &id,
        IdKind::Driver,
        "drivers",
        |driver_id| async move {
            handle
                .ask(|reply| Command::Kill { driver_id, reply })
                .await
                .map(|_| ())
        },
    )
    .await
}

pub async fn kill_app(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
    Form(form): Form<KillForm>,
) -> Response {
    let handle = master.clone();
    kill_from_ui(
        &master,
        &form,
        &id,
        IdKind::App,
        "apps",
        |app_id| async move { handle.ask(|reply| Command::KillApp { app_id, reply }).await },
    )
    .await
}

/// Checks the form, then kills `id` and goes back to its page (`{base}/{pages}/{id}`).
async fn kill_from_ui<F, Fut>(
    master: &MasterHandle,
    form: &KillForm,
    id: &str,
    kind: IdKind,
    pages: &str,
    kill: F,
) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let base = &super::base(master);
    if let Err((status, message)) = allowed(master, form) {
        return error_page(base, status, message);
    }
    let result = match check_id("id", id, kind) {
        Ok(()) => kill(id.to_string()).await,
        Err(e) => Err(Error::from(e)),
    };
    match result {
        Ok(()) => {
            tracing::info!(id, "killed from the UI");
            see_other(format!("{base}/{pages}/{id}"))
        }
        Err(e) => error_page(base, status_of(&e), e.to_string()),
    }
}
