//! Errors of the shared crate: bad input (with the field and the reason) and client failures.

/// Input that fails validation: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidInput {
    pub field: String,
    pub reason: String,
}

impl InvalidInput {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input: {0}")]
    Invalid(#[from] InvalidInput),
    #[error("invalid master URL {url:?}: {reason}")]
    MasterUrl { url: String, reason: String },
    /// The causes are in the message, and not a source, so that logs written with `%error`
    /// show why (an untrusted certificate, a refused connection) and `{:#}` does not repeat it.
    #[error("cannot connect to the master at {url}: {}", with_causes(.cause.to_string(), .cause))]
    Connect {
        url: String,
        cause: tonic::transport::Error,
    },
    #[error("tls ca {path}: {reason}")]
    TlsCa { path: String, reason: String },
    /// As with `Connect`, the causes are in the message.
    #[error("{}", status_text(.0))]
    Status(tonic::Status),
    #[error("cannot read the secret file {path}: {source}")]
    SecretFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the secret is empty")]
    EmptySecret,
    #[error("the secret is not valid in a gRPC header: it must be printable ASCII")]
    SecretNotAscii,
    #[error("output: {0}")]
    Io(#[from] std::io::Error),
    #[error("the master closed the stream before the driver ended")]
    StreamClosed,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

/// `text` followed by the causes of `error` not already said: tonic's own message is only
/// "transport error", and the cause is what a person needs.
fn with_causes(mut text: String, error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        source = cause.source();
    }
    text
}

/// A gRPC status as a person reads it: the code's name in words, then the message.
fn status_text(status: &tonic::Status) -> String {
    let what = match status.code() {
        tonic::Code::Unauthenticated => "not authenticated",
        tonic::Code::PermissionDenied => "permission denied",
        tonic::Code::AlreadyExists => "already exists",
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::FailedPrecondition => "not possible now",
        tonic::Code::ResourceExhausted => "too much",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "timed out",
        _ => "failed",
    };
    with_causes(format!("{what}: {}", status.message()), status)
}
