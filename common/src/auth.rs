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
        Self::resolve_from(file, SECRET_ENV)
    }

    /// The secret from `file` if given, else from the variable `env`.
    pub fn resolve_from(file: Option<&Path>, env: &str) -> Result<Option<Self>> {
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| Error::SecretFile {
                path: path.display().to_string(),
                source,
            })?;
            return Self::new(&text).map(Some);
        }
        match std::env::var(env) {
            Ok(value) if !value.is_empty() => Self::new(&value).map(Some),
            _ => Ok(None),
        }
    }

    /// Compares in time that does not depend on where the first difference is.
    pub fn matches(&self, presented: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(presented).into()
    }
}

/// Environment variable holding the secret being replaced, accepted during a rotation.
pub const PREVIOUS_SECRET_ENV: &str = "HEARTH_PREVIOUS_SECRET";
/// Environment variable naming a file that holds the secret being replaced.
pub const PREVIOUS_SECRET_FILE_ENV: &str = "HEARTH_PREVIOUS_SECRET_FILE";

/// Server side: refuses calls whose bearer token is not the secret (or, during a rotation,
/// the previous one). No secret means insecure.
#[derive(Clone, Debug)]
pub struct CheckSecret {
    secret: Option<Secret>,
    previous: Option<Secret>,
}

impl CheckSecret {
    pub fn new(secret: Option<Secret>) -> Self {
        Self {
            secret,
            previous: None,
        }
    }

    /// Also accepts `previous`, so workers and clients can move to the new secret one by one.
    pub fn with_previous(secret: Option<Secret>, previous: Option<Secret>) -> Self {
        Self { secret, previous }
    }

    /// Whether `presented` is the secret or the previous one (always true when insecure).
    pub fn accepts(&self, presented: &[u8]) -> bool {
        match &self.secret {
            None => true,
            Some(secret) => {
                // Both compared, so timing does not tell which one matched.
                let current = secret.matches(presented);
                let previous = self.previous.as_ref().is_some_and(|p| p.matches(presented));
                current | previous
            }
        }
    }

    /// Checks an `Authorization` header value; used by the web UI's state-changing requests too.
    pub fn check_header(&self, header: Option<&[u8]>) -> Result<(), Status> {
        if self.secret.is_none() {
            return Ok(());
        }
        let Some(value) = header else {
            return Err(Status::unauthenticated(
                "missing authorization: this master requires the shared secret (HEARTH_SECRET)",
            ));
        };
        let token = value.strip_prefix(b"Bearer ").unwrap_or(b"");
        if self.accepts(token) {
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
    fn a_rotation_accepts_the_current_and_the_previous_secret_only() {
        let new = Secret::new("new").ok();
        let old = Secret::new("old").ok();
        let check = CheckSecret::with_previous(new.clone(), old);
        assert!(check.accepts(b"new") && check.accepts(b"old"));
        assert!(!check.accepts(b"other") && !check.accepts(b""));
        assert!(check.check_header(Some(b"Bearer old")).is_ok());
        assert!(check.check_header(Some(b"Bearer other")).is_err());
        let plain = CheckSecret::new(new);
        assert!(!plain.accepts(b"old"));
        assert!(CheckSecret::new(None).accepts(b"anything"));
    }

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
