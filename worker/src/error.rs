//! The worker's errors.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Common(#[from] hearth_common::Error),
    #[error("stream to the master: {0}")]
    Stream(#[from] tonic::Status),
    #[error("the master closed the stream")]
    Closed,
    #[error("the master's first answer was not Registered")]
    Protocol,
    #[error(
        "the master answering is in term {epoch}, but a master in term {newest} has led since: it no longer leads"
    )]
    StaleMaster { epoch: u64, newest: u64 },
    #[error("the master acknowledged no heartbeat for {0:?}")]
    MasterSilent(std::time::Duration),
    #[error("work directory {path}: {source}")]
    WorkDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind the worker's web port {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Config(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
