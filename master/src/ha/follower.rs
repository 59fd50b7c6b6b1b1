//! The standby's side of replication: follows the leader's stream into its own state file and
//! confirms each turn once it is there (fsync'd), so the leader may acknowledge it.

use std::sync::Arc;

use hearth_common::{
    MAX_MESSAGE_BYTES, Shutdown,
    auth::{Secret, SendSecret},
    client::ClientTls,
    proto::{
        FollowStart, FollowerMessage, LeaderMessage, follower_message::Msg,
        replication_service_client::ReplicationServiceClient,
    },
};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::store::{
    Changes, Store,
    rows::{Row, table_named},
};

/// What the standby knows of its copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowStatus {
    /// The leader followed now.
    pub leader_url: Option<String>,
    /// Its term.
    pub epoch: u64,
    /// The last turn in this master's file; `None` until a snapshot is whole.
    pub applied: Option<u64>,
    /// Why following stopped last, if it did.
    pub error: Option<String>,
}

/// Why following stopped.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    #[error("connecting to the leader at {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("the leader's stream: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the leader closed the stream")]
    Closed,
    #[error("a row from the leader: {0}")]
    Row(String),
    #[error("writing the state file: {0}")]
    Store(#[from] crate::error::StoreError),
}

/// Follows the leader at `url` as the standby process `me`, until the stream ends or
/// `shutdown`. Everything applied is in `store`.
pub async fn follow(
    url: &str,
    secret: Option<&Secret>,
    tls: &ClientTls,
    me: &str,
    store: &Arc<Store>,
    status: &watch::Sender<FollowStatus>,
    shutdown: &Shutdown,
) -> Result<(), FollowError> {
    let connect = |reason: String| FollowError::Connect {
        url: url.to_string(),
        reason,
    };
    let channel = hearth_common::client::channel(url, tls)
        .await
        .map_err(|e| connect(e.to_string()))?;
    let send = SendSecret::new(secret).map_err(|e| connect(e.to_string()))?;
    let mut client = ReplicationServiceClient::with_interceptor(channel, send)
        .max_decoding_message_size(super::replication::MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (up, up_rx) = mpsc::channel(64);
    let start = FollowerMessage {
        msg: Some(Msg::Start(FollowStart {
            standby: me.to_string(),
        })),
    };
    let _ = up.send(start).await;
    let mut inbound = client
        .follow(ReceiverStream::new(up_rx))
        .await?
        .into_inner();
    status.send_modify(|s| {
        s.leader_url = Some(url.to_string());
        s.error = None;
    });
    tracing::info!(leader = url, "following the leader");
    // This stream's snapshot began; the turn that must come next once it is whole.
    let mut snapshot_begun = false;
    let mut next_turn: Option<u64> = None;
    loop {
        let message = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = inbound.message() => m?.ok_or(FollowError::Closed)?,
        };
        let seq = message.seq;
        let (epoch, whole) = (message.epoch, !message.snapshot || message.snapshot_last);
        if message.snapshot {
            if message.snapshot_first {
                // The file is emptied next: no longer a copy anyone could lead from.
                snapshot_begun = true;
                next_turn = None;
                status.send_modify(|s| s.applied = None);
            } else if !snapshot_begun || next_turn.is_some() {
                return Err(FollowError::Row(format!(
                    "a part of snapshot {seq} out of place"
                )));
            }
        } else if next_turn != Some(seq) {
            // A snapshot cut short (the leader could not read its file) or a turn skipped:
            // this copy is not the leader's; the next connection starts again.
            return Err(FollowError::Row(format!(
                "turn {seq} where {} was due",
                next_turn.map_or_else(|| "the snapshot's end".to_string(), |n| n.to_string())
            )));
        }
        apply(store, message).await?;
        if whole {
            if up
                .send(FollowerMessage {
                    msg: Some(Msg::Applied(seq)),
                })
                .await
                .is_err()
            {
                return Err(FollowError::Closed);
            }
            status.send_modify(|s| {
                s.applied = Some(seq);
                s.epoch = epoch;
            });
            next_turn = Some(seq + 1);
        }
    }
}

/// Writes one message's rows (emptying the file first for a snapshot's first part).
async fn apply(store: &Arc<Store>, message: LeaderMessage) -> Result<(), FollowError> {
    let rows = message
        .rows
        .into_iter()
        .map(|r| {
            let table = table_named(&r.table)
                .ok_or_else(|| FollowError::Row(format!("unknown table {:?}", r.table)))?;
            Ok(Row {
                table,
                key: r.key,
                value: (!r.delete).then_some(r.value),
            })
        })
        .collect::<Result<Vec<_>, FollowError>>()?;
    let changes = Changes::from_rows(rows).map_err(FollowError::Row)?;
    let (store, clear) = (store.clone(), message.snapshot_first);
    tokio::task::spawn_blocking(move || {
        if clear {
            store.clear()?;
        }
        if changes.is_empty() {
            Ok(())
        } else {
            store.save(&changes)
        }
    })
    .await
    .map_err(|e| FollowError::Row(format!("the writer stopped: {e}")))??;
    Ok(())
}
