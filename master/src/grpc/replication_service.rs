//! The leader's replication endpoint: a standby follows the leader's state file through it.
//! Behind the cluster secret, like the worker service.

use std::pin::Pin;

use hearth_common::proto::{
    FollowerMessage, LeaderMessage, follower_message::Msg,
    replication_service_server::ReplicationService,
};
use tokio::sync::{mpsc, watch};
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    actor::MasterHandle,
    ha::replication::{Joining, TURNS_BUFFER, turn_message},
};

/// How long a standby has to say who it is.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct ReplicationApi {
    master: MasterHandle,
}

impl ReplicationApi {
    pub fn new(master: MasterHandle) -> Self {
        Self { master }
    }
}

type Turns = Pin<Box<dyn Stream<Item = Result<LeaderMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ReplicationService for ReplicationApi {
    type FollowStream = Turns;

    async fn follow(
        &self,
        request: Request<Streaming<FollowerMessage>>,
    ) -> Result<Response<Self::FollowStream>, Status> {
        let Some(joins) = self.master.joins.clone() else {
            return Err(Status::failed_precondition(
                "this master runs without a Lease (--lease): no standby can follow it",
            ));
        };
        if !self.master.leadership.acting() {
            return Err(Status::unavailable("this master no longer leads"));
        }
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(START_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no FollowStart within 10 s"))??;
        let Some(FollowerMessage {
            msg: Some(Msg::Start(start)),
        }) = first
        else {
            return Err(Status::invalid_argument(
                "start: the first message must be FollowStart",
            ));
        };
        if start.standby.is_empty() || !start.standby.contains('/') {
            return Err(Status::invalid_argument(
                "start.standby: must be the standby's IDENTITY/NONCE",
            ));
        }
        let (snapshot_tx, snapshot_rx) = mpsc::channel(4);
        let (turns_tx, turns_rx) = mpsc::channel(TURNS_BUFFER);
        let (applied_tx, applied_rx) = watch::channel(None);
        let standby = start.standby.clone();
        tokio::spawn(async move {
            // Confirmations only grow; the stream ending drops the sender, which the actor
            // sees as the standby gone.
            while let Ok(Some(message)) = inbound.message().await {
                if let Some(Msg::Applied(seq)) = message.msg {
                    applied_tx.send_if_modified(|a| {
                        let later = a.is_none_or(|a| seq > a);
                        if later {
                            *a = Some(seq);
                        }
                        later
                    });
                }
            }
            tracing::info!(standby, "the standby's stream ended");
        });
        let joining = Joining {
            standby: start.standby,
            snapshot: snapshot_tx,
            turns: turns_tx,
            applied: applied_rx,
        };
        if !joins.join(joining).await {
            return Err(Status::unavailable("this master is stopping"));
        }
        let epoch = self.master.leadership.epoch;
        let leadership = self.master.leadership.clone();
        let turns = ReceiverStream::new(turns_rx).map(move |turn| turn_message(turn, epoch));
        let stream = ReceiverStream::new(snapshot_rx)
            .chain(turns)
            .map_while(move |m| leadership.acting().then_some(Ok(m)));
        Ok(Response::new(Box::pin(stream)))
    }
}
