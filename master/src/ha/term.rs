//! A term as leader: the master runs while its Lease is renewed every retry period; when a
//! renewal has not succeeded within the renew deadline it stops acting at once, and the
//! process ends (restarted, it comes back as the standby). On shutdown it stops acting first,
//! then marks the Lease released so the standby in sync takes over without waiting.

use std::sync::Arc;

use hearth_common::Shutdown;
use tokio::sync::{mpsc, oneshot};

use super::{
    Leadership, SyncRequest,
    election::{Elector, Term},
    standby,
};
use crate::{
    config::MasterConfig,
    error::{Error, Result},
};

/// Runs a master under the Lease: the standby until it may lead, then the leader for one term.
pub async fn run(config: MasterConfig, shutdown: Shutdown) -> Result<()> {
    config.validate()?;
    let ha = config
        .ha
        .clone()
        .ok_or_else(|| Error::Config("no --lease".into()))?;
    let mut elector = super::election::Elector::connect(ha)
        .await
        .map_err(|e| Error::Config(format!("--lease: {e}")))?;
    tracing::info!(holder = %elector.me, lease = %elector.config().lease,
        namespace = %elector.config().namespace, "campaigning for the lease");
    let Some(term) = standby::wait_to_lead(&config, &mut elector, &shutdown).await? else {
        return Ok(());
    };
    lead(config, elector, term, shutdown).await
}

async fn lead(
    config: MasterConfig,
    elector: Elector,
    term: Term,
    shutdown: Shutdown,
) -> Result<()> {
    let ha = elector.config().clone();
    let (sync_tx, sync_rx) = mpsc::channel(64);
    let leadership = Leadership::elected(term.epoch, term.sent + ha.renew_deadline, sync_tx);
    tracing::info!(epoch = term.epoch, holder = %elector.me, "leading");
    // Renewing starts before the master does: opening a large state file takes time.
    let hold = tokio::spawn(hold(
        elector,
        term,
        leadership.clone(),
        sync_rx,
        shutdown.clone(),
    ));
    let served = match crate::server::start_with(config, leadership.clone(), shutdown.clone()).await
    {
        Ok(running) => running.wait().await,
        Err(e) => Err(e),
    };
    leadership.stop();
    shutdown.cancel();
    let held = hold
        .await
        .map_err(|e| Error::Internal(format!("the lease task panicked: {e}")))?;
    served.and(held)
}

/// Renews the term until it is lost or the master stops; writes the standby's sync state into
/// the Lease when asked, answering once it is written.
async fn hold(
    elector: Elector,
    mut term: Term,
    leadership: Arc<Leadership>,
    mut requests: mpsc::Receiver<SyncRequest>,
    shutdown: Shutdown,
) -> Result<()> {
    let ha = elector.config().clone();
    let mut in_sync: Option<String> = None;
    let mut waiting: Vec<oneshot::Sender<bool>> = Vec::new();
    let mut tick = tokio::time::interval(ha.retry_period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                leadership.stop();
                match elector.release(&term, in_sync.as_deref()).await {
                    Ok(()) => tracing::info!(epoch = term.epoch, "stopped leading; the lease is released"),
                    Err(e) => tracing::warn!(error = %e, "cannot release the lease; the standby waits it out"),
                }
                return Ok(());
            }
            request = requests.recv() => {
                let Some((want, done)) = request else { continue };
                in_sync = want;
                waiting.push(done);
                // The last of the queued requests is what the Lease must say.
                while let Ok((want, done)) = requests.try_recv() {
                    in_sync = want;
                    waiting.push(done);
                }
            }
            _ = tick.tick() => {}
        }
        match elector.renew(&mut term, in_sync.as_deref()).await {
            Ok(true) => {
                leadership.extend(term.sent + ha.renew_deadline);
                for done in waiting.drain(..) {
                    let _ = done.send(true);
                }
            }
            Ok(false) => {
                leadership.stop();
                tracing::error!(epoch = term.epoch, "the lease was taken by another master");
                shutdown.cancel();
                return Err(Error::Unavailable(
                    "the lease was taken by another master".into(),
                ));
            }
            Err(e) => {
                tracing::warn!(epoch = term.epoch, error = %e, "cannot renew the lease");
                if !leadership.acting() {
                    tracing::error!(
                        epoch = term.epoch,
                        "the lease was not renewed within the renew deadline; stopped acting"
                    );
                    shutdown.cancel();
                    return Err(Error::Unavailable(format!(
                        "the lease was not renewed within {:?}: {e}",
                        ha.renew_deadline
                    )));
                }
            }
        }
    }
}
