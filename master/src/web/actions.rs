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
use crate::{actor::MasterHandle, error::Error, events::Command};

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
    match &master.config.secret {
        Some(secret) if secret.matches(form.secret.as_bytes()) => Ok(()),
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
    let base = master.config.ui.base_path.clone();
    if let Err((status, message)) = allowed(&master, &form) {
        return error_page(&base, status, message);
    }
    let result = match check_id("driver", &id, IdKind::Driver) {
        Ok(()) => {
            let driver_id = id.clone();
            master
                .ask(|reply| Command::Kill { driver_id, reply })
                .await
                .map(|_| ())
        }
        Err(e) => Err(Error::from(e)),
    };
    match result {
        Ok(()) => {
            tracing::info!(driver_id = %id, "driver killed from the UI");
            see_other(format!("{base}/drivers/{id}"))
        }
        Err(e) => error_page(&base, status_of(&e), e.to_string()),
    }
}

pub async fn kill_app(
    State(master): State<MasterHandle>,
    Path(id): Path<String>,
    Form(form): Form<KillForm>,
) -> Response {
    let base = master.config.ui.base_path.clone();
    if let Err((status, message)) = allowed(&master, &form) {
        return error_page(&base, status, message);
    }
    let result = match check_id("app", &id, IdKind::App) {
        Ok(()) => {
            let app_id = id.clone();
            master.ask(|reply| Command::KillApp { app_id, reply }).await
        }
        Err(e) => Err(Error::from(e)),
    };
    match result {
        Ok(()) => {
            tracing::info!(app_id = %id, "application killed from the UI");
            see_other(format!("{base}/apps/{id}"))
        }
        Err(e) => error_page(&base, status_of(&e), e.to_string()),
    }
}
