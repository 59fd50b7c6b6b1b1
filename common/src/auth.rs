//! The shared secret: loading it, sending it, and checking it in constant time.
//!
//! Every call carries `authorization: Bearer <secret>`. The server side is a tonic interceptor
//! in front of Hearth's services; the gRPC health and reflection services stay open so
//! Kubernetes' native gRPC probes and `grpcurl describe` work without the secret.

use std::{fmt, path::Path, sync::Arc};

use subtle::ConstantTimeEq;
use tonic::{Request, Status, metadata::MetadataValue, service::Interceptor};

use crate::error::{Error, Result};

/// Environment variable holding the secret itself.
pub const SECRET_ENV: &str = "HEARTH_SECRET";
/// Environment variable naming a file that holds the secret.
pub const SECRET_FILE_ENV: &str = "HEARTH_SECRET_FILE";

/// The cluster's shared secret. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// Accepts a secret that can travel in a header: printable ASCII, surrounding whitespace
    /// (a file's trailing newline) trimmed.
    pub fn new(value: &str) -> Result<Self> {
        let value = value.trim();
        if value.is_empty() {
            return Err(Error::EmptySecret);
        }
        if !value.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err(Error::SecretNotAscii);
        }
        Ok(Self(value.into()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The secret from `file` if given, else from `$HEARTH_SECRET`; `None` when neither is set.
    pub fn resolve(file: Option<&Path>) -> Result<Option<Self>> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
                path: path.display().to_string(),
                source,
            })?;
            return Self::new(&text).map(Some);
        }
        match std::env::var(SECRET_ENV) {
            Ok(value) if !value.is_empty() => Self::new(&value).map(Some),
            _ => Ok(None),
        }
    }

    /// Compares in time that does not depend on where the first difference is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

/// Server side: refuses calls whose bearer token is not the secret. `None` means insecure.
#[derive(Clone, Debug)]
pub struct CheckSecret {
    secret: Option<Secret>,
}

impl CheckSecret {
    pub fn new(secret: Option<Secret>) -> Self {
        Self { secret }
    }

    /// Checks an `Authorization` header value; used by the web UI's state-changing requests too.
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<(), Status> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let Some(value) = header else {
            return Err(Status::unauthenticated(
                "missing authorization: this master requires the shared secret (HEARTH_SECRET)",
            ));
        };
        let token = value.strip_prefix(b"Bearer ").unwrap_or(b"");
        if secret.matches(token) {
            Ok(())
        } else {
            Err(Status::unauthenticated(
                "wrong secret: the token does not match the master's shared secret",
            ))
        }
    }
}

impl Interceptor for CheckSecret {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        self.check_header(header)?;
        Ok(request)
    }
}

/// Client side: adds the bearer token to every call (nothing when there is no secret).
#[derive(Clone, Debug)]
pub struct SendSecret {
    header: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl SendSecret {
    pub fn new(secret: Option<&Secret>) -> Result<Self> {
        let header = match secret {
            Some(s) => Some(
                format!("Bearer {}", s.expose())
                    .parse()
                    .map_err(|_| Error::SecretNotAscii)?,
            ),
            None => None,
        };
        Ok(Self { header })
    }
}

impl Interceptor for SendSecret {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(h) = &self.header {
            request.metadata_mut().insert("authorization", h.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_trimmed_and_never_printed() {
        let s = Secret::new("  s3cret\n").unwrap();
        assert_eq!(s.expose(), "s3cret");
        assert_eq!(format!("{s:?}"), "Secret(..)");
        assert!(Secret::new("\n").is_err());
        assert!(Secret::new("tab\there").is_err());
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let check = CheckSecret::new(Some(Secret::new("abc").unwrap()));
        assert!(check.check_header(Some(b"Bearer abc")).is_ok());
        for bad in [
            &b"Bearer abd"[..],
            b"Bearer ab",
            b"Bearer abcd",
            b"abc",
            b"",
        ] {
            let err = check.check_header(Some(bad)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::Unauthenticated);
        }
        assert!(
            check
                .check_header(None)
                .unwrap_err()
                .message()
                .contains("missing")
        );
        assert!(CheckSecret::new(None).check_header(None).is_ok());
    }
}
