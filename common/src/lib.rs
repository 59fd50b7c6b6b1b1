//! Everything the master, the workers and clients share.
//!
//! - [`proto`]: the `hearth.v1` wire protocol, generated from `proto/hearth.proto` at build time.
//! - [`ids`]: Spark-style ids (`driver-20261121143000-0000`, `worker-...`) and clock helpers.
//! - [`resources`]: cores and memory (`4g`, `512m`) and their validation.
//! - [`named_resources`]: GPUs and other named resources: offers, asks, discovery output.
//! - [`duration`]: durations in settings (`10s`, `500ms`).
//! - [`heartbeat`]: when a worker's heartbeat asks the master for an answer.
//! - [`spec`]: validation of a driver submission, shared by the CLI and the master's edge.
//! - [`state_names`]: Spark's state names for the protocol's enums.
//! - [`auth`]: the shared secret, the server-side check and the client-side header.
//! - [`codec`]: the gRPC codec (prost's, with small stream buffers).
//! - [`client`]: the Rust client library (`Client`) used by the `hearth` command and drivers.
//! - [`views`]: the JSON shapes of `/api/v1` and `hearth list --json`.
//! - [`error`]: the errors of this crate.

pub mod auth;
pub mod bounded_http;
pub mod client;
pub mod codec;
pub mod duration;
pub mod error;
pub mod heartbeat;
pub mod ids;
pub mod named_resources;
pub mod resources;
pub mod spec;
pub mod state_names;
pub mod views;

/// The generated `hearth.v1` protocol.
pub mod proto {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("hearth.v1");

    /// The encoded descriptor set of `hearth.v1`, for the gRPC reflection service.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/hearth_descriptor.bin"));
}

pub use error::{Error, Result};
pub use tokio_util::sync::CancellationToken as Shutdown;

/// Largest gRPC message either side accepts or sends (log chunks are well below it).
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// HTTP/2 flow-control windows of the master's gRPC port and the workers' tunnel connection: a
/// stream may hold [`STREAM_WINDOW_BYTES`] unread, and the connection many times that, so
/// every tunnel of a worker (at most 32) can stall at once without holding up the others.
pub const STREAM_WINDOW_BYTES: u32 = 256 * 1024;
pub const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
