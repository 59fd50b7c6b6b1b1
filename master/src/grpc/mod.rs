//! The master's gRPC side: the worker service behind the cluster secret, the client service
//! behind [`access`] (the secret, tenants' tokens, drivers' own), plus the standard health and
//! reflection services (open, so Kubernetes' gRPC probes and `grpcurl` work).

pub mod access;
mod client_service;
mod decode_budget;
pub mod own_thread;
mod replication_service;
mod status_codes;
mod timing;
mod worker_service;

use hearth_common::{
    MAX_MESSAGE_BYTES, Shutdown,
    proto::{
        FILE_DESCRIPTOR_SET, client_service_server::ClientServiceServer,
        replication_service_server::ReplicationServiceServer,
        worker_service_server::WorkerServiceServer,
    },
};
use tokio_stream::{
    StreamExt,
    wrappers::{ReceiverStream, TcpListenerStream},
};
use tonic::transport::Server;

use crate::{actor::MasterHandle, error::Result, listen::Listener};

pub use client_service::ClientApi;
pub use worker_service::WorkerApi;

/// Serves gRPC on `listener` until `shutdown`, on the runtime it is called from
/// ([`own_thread::serve`] gives it one of its own).
async fn serve(handle: MasterHandle, listener: Listener, shutdown: Shutdown) -> Result<()> {
    let check = handle.config.secret_check();
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ClientServiceServer<ClientApi>>().await;
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
    // Both versions of reflection: tools still speaking v1alpha (older grpcurl, Postman,
    // Kreya) ask for that one.
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(|e| crate::error::Error::Internal(format!("reflection: {e}")))?;
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(|e| crate::error::Error::Internal(format!("reflection v1alpha: {e}")))?;
    let client = ClientServiceServer::new(ClientApi::new(handle.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let worker = WorkerServiceServer::new(WorkerApi::new(handle.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let replication =
        ReplicationServiceServer::new(replication_service::ReplicationApi::new(handle.clone()))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(crate::ha::replication::MESSAGE_BYTES);
    let router = Server::builder()
        .layer(timing::TimeRpcs {
            telemetry: handle.telemetry.clone(),
        })
        .layer(status_codes::SpecStatusCodes)
        .layer(decode_budget::DecodeBudget::default())
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(hearth_common::STREAM_WINDOW_BYTES))
        .initial_connection_window_size(Some(hearth_common::CONNECTION_WINDOW_BYTES))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(tonic::service::interceptor::InterceptedService::new(
            client,
            access::Authenticate::new(handle.clone()),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            worker,
            check.clone(),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            replication,
            check,
        ));
    match listener {
        Listener::Plain(listener) => {
            router
                .serve_with_incoming_shutdown(
                    // The builder's TCP settings cover only the listeners it binds itself.
                    TcpListenerStream::new(listener)
                        .map(|accepted| accepted.inspect(crate::accepted::tune)),
                    shutdown.cancelled_owned(),
                )
                .await?
        }
        Listener::Tls(accepted) => {
            let accepted = ReceiverStream::new(accepted)
                .map(|(tls, _peer)| Ok::<_, std::convert::Infallible>(tls));
            router
                .serve_with_incoming_shutdown(accepted, shutdown.cancelled_owned())
                .await?
        }
    }
    Ok(())
}
