//! The master's errors, mapped once onto gRPC statuses and HTTP responses.

use hearth_common::error::InvalidInput;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the master is shutting down")]
    ShuttingDown,
    #[error("internal error: {0}")]
    Internal(String),
    #[error("cannot bind {what} on {addr}: {source}")]
    Bind {
        what: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        let message = e.to_string();
        match e {
            Error::Invalid(_) => tonic::Status::invalid_argument(message),
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::Unavailable(_) | Error::ShuttingDown => tonic::Status::unavailable(message),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            _ => tonic::Status::internal(message),
        }
    }
}

/// Why the state file could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the state directory {path}: {source}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the state file {path} cannot be opened: {reason}. It may be damaged; the master does not start on state it cannot read (move the file away to start empty, losing what it held)"
    )]
    Open { path: String, reason: String },
    #[error(
        "the state file {path} is in use by another process (is another master running on this state directory?)"
    )]
    InUse { path: String },
    #[error(
        "the state file {path} holds an unreadable {table} record {key:?}: {reason}. The master does not start on state it cannot read"
    )]
    Record {
        path: String,
        table: &'static str,
        key: String,
        reason: String,
    },
    #[error(
        "the state file {path} was written by a newer master (format {found}, this one reads {reads})"
    )]
    Format {
        path: String,
        found: u32,
        reads: u32,
    },
    #[error("writing the state file {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("reading the state file {path}: {reason}")]
    Read { path: String, reason: String },
}
