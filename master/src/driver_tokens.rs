//! Each launch of a driver gets a token of its own, in place of the cluster secret: valid for
//! that driver and its application only, and only while that attempt runs. A token is
//! `hdt.<driver id>.<attempt>.<HMAC-SHA256 of both>`, under a key kept in the state directory
//! (or, for two masters under a Lease, derived from the cluster secret they share), so the
//! master checks one without storing any and a restarted master, or the standby that took
//! over, still accepts the tokens of the drivers it adopts.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use ring::{
    hmac,
    rand::{SecureRandom, SystemRandom},
};

use crate::error::{Error, Result};

const KEY_FILE: &str = "driver-token.key";
const PREFIX: &str = "hdt";

#[derive(Clone)]
pub struct DriverTokens {
    key: hmac::Key,
    /// A key tokens were signed with before a secret rotation: still accepted, never used.
    previous: Option<hmac::Key>,
}

impl std::fmt::Debug for DriverTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DriverTokens(..)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 == 1 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl DriverTokens {
    pub fn from_key(key: &[u8]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            previous: None,
        }
    }

    /// The key two masters under one Lease share without a file: derived from the cluster
    /// secret, so the tokens of the drivers one launched are accepted by the other after a
    /// failover. During a rotation the key of the `previous` secret is accepted too, so the
    /// drivers that were running keep their tokens.
    pub fn from_secret(
        secret: &hearth_common::auth::Secret,
        previous: Option<&hearth_common::auth::Secret>,
    ) -> Self {
        let derive = |secret: &hearth_common::auth::Secret| {
            let root = hmac::Key::new(hmac::HMAC_SHA256, secret.expose().as_bytes());
            let derived = hmac::sign(&root, b"hearth driver token key v1");
            hmac::Key::new(hmac::HMAC_SHA256, derived.as_ref())
        };
        Self {
            key: derive(secret),
            previous: previous.map(derive),
        }
    }

    /// Reads the key from `state_dir`, or makes one (readable by the master's user only).
    pub fn load_or_create(state_dir: &Path) -> Result<Self> {
        let path = state_dir.join(KEY_FILE);
        let fail =
            |e: std::io::Error| Error::Config(format!("driver token key {}: {e}", path.display()));
        match std::fs::read(&path) {
            Ok(key) if key.len() >= 32 => return Ok(Self::from_key(&key)),
            Ok(_) => {
                return Err(Error::Config(format!(
                    "driver token key {}: shorter than 32 bytes; remove it to make a new one \
                     (running drivers then need a relaunch to act on their applications)",
                    path.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(fail(e)),
        }
        let mut key = [0u8; 32];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| Error::Internal("no randomness for the driver token key".into()))?;
        let tmp = state_dir.join(format!("{KEY_FILE}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(fail)?;
        file.write_all(&key).map_err(fail)?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&tmp, &path).map_err(fail)?;
        Ok(Self::from_key(&key))
    }

    fn message(driver_id: &str, attempt: u32) -> String {
        format!("{driver_id}.{attempt}")
    }

    /// The token for `attempt` of `driver_id`.
    pub fn mint(&self, driver_id: &str, attempt: u32) -> String {
        let tag = hmac::sign(&self.key, Self::message(driver_id, attempt).as_bytes());
        format!("{PREFIX}.{driver_id}.{attempt}.{}", hex(tag.as_ref()))
    }

    /// The driver and attempt a token was made for, if this master made it.
    pub fn verify(&self, token: &[u8]) -> Option<(String, u32)> {
        let text = std::str::from_utf8(token).ok()?;
        let mut parts = text.split('.');
        let (prefix, driver_id, attempt, tag) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if prefix != PREFIX || parts.next().is_some() {
            return None;
        }
        let attempt: u32 = attempt.parse().ok()?;
        let tag = unhex(tag)?;
        let message = Self::message(driver_id, attempt);
        let signed_by = |key: &hmac::Key| hmac::verify(key, message.as_bytes(), &tag).is_ok();
        (signed_by(&self.key) || self.previous.as_ref().is_some_and(signed_by))
            .then(|| (driver_id.to_string(), attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_driver_and_attempt_and_cannot_be_changed() {
        let tokens = DriverTokens::from_key(&[7; 32]);
        let token = tokens.mint("driver-20260101000000-0001", 2);
        assert_eq!(
            tokens.verify(token.as_bytes()),
            Some(("driver-20260101000000-0001".to_string(), 2))
        );
        let other = token.replace("-0001.2.", "-0002.2.");
        assert_eq!(tokens.verify(other.as_bytes()), None);
        let other = token.replace("-0001.2.", "-0001.3.");
        assert_eq!(tokens.verify(other.as_bytes()), None);
        assert_eq!(
            DriverTokens::from_key(&[8; 32]).verify(token.as_bytes()),
            None
        );
        assert_eq!(tokens.verify(b"hdt.x.1.zz"), None);
        assert_eq!(tokens.verify(b"cluster-secret"), None);
    }

    #[test]
    fn the_key_outlives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let token = DriverTokens::load_or_create(dir.path())
            .unwrap()
            .mint("driver-x", 1);
        let again = DriverTokens::load_or_create(dir.path()).unwrap();
        assert!(again.verify(token.as_bytes()).is_some());
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
    }

    #[test]
    fn two_masters_sharing_a_secret_accept_each_others_tokens_and_no_other() {
        let secret = |s: &str| hearth_common::auth::Secret::new(s).unwrap();
        let token =
            DriverTokens::from_secret(&secret("cluster-secret-1"), None).mint("driver-x", 2);
        let standby = DriverTokens::from_secret(&secret("cluster-secret-1"), None);
        assert_eq!(
            standby.verify(token.as_bytes()),
            Some(("driver-x".to_string(), 2))
        );
        let other = DriverTokens::from_secret(&secret("cluster-secret-2"), None);
        assert!(other.verify(token.as_bytes()).is_none());
        // Rotated: the new secret's key signs, the old one's tokens still pass.
        let rotated = DriverTokens::from_secret(
            &secret("cluster-secret-2"),
            Some(&secret("cluster-secret-1")),
        );
        assert!(rotated.verify(token.as_bytes()).is_some());
        let fresh = rotated.mint("driver-y", 1);
        assert!(other.verify(fresh.as_bytes()).is_some());
        assert!(standby.verify(fresh.as_bytes()).is_none());
    }
}
