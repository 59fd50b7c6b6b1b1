//! Tenants: named holders of a token (kept only as its SHA-256), each allowed to submit into
//! some queues. A tenant sees everything, and kills or reads the logs of its own work only.

use ring::digest::{SHA256, digest};
use subtle::ConstantTimeEq;

/// One tenant of the queues file.
#[derive(Clone, PartialEq, Eq)]
pub struct Tenant {
    pub name: String,
    /// SHA-256 of its token.
    pub token_sha256: [u8; 32],
    /// The queues it may submit into (named exactly; a child is not implied by its parent).
    pub queues: Vec<String>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    pub fn may_submit_to(&self, queue: &str) -> bool {
        self.queues.iter().any(|q| q == queue)
    }
}

/// SHA-256 of `token` after trimming (a token file usually ends with a newline).
pub fn token_hash(token: &[u8]) -> [u8; 32] {
    let trimmed = token.trim_ascii();
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, trimmed).as_ref());
    out
}

/// All tenants; none when the queues file names none (then only the cluster secret works).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tenants(Vec<Tenant>);

impl Tenants {
    pub fn new(tenants: Vec<Tenant>) -> Self {
        Self(tenants)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn all(&self) -> &[Tenant] {
        &self.0
    }

    /// The tenant whose token this is; every tenant is compared, in constant time each.
    pub fn identify(&self, token: &[u8]) -> Option<&Tenant> {
        let hash = token_hash(token);
        let mut found = None;
        for t in &self.0 {
            if bool::from(t.token_sha256.ct_eq(&hash)) {
                found = Some(t);
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_is_known_by_its_token_alone() {
        let tenants = Tenants::new(vec![Tenant {
            name: "alice".into(),
            token_sha256: token_hash(b"alice-token\n"),
            queues: vec!["ml".into()],
        }]);
        assert_eq!(
            tenants.identify(b"alice-token").map(|t| t.name.as_str()),
            Some("alice")
        );
        assert!(tenants.identify(b"alice-token2").is_none());
        assert!(tenants.identify(b"").is_none());
        assert!(
            format!("{tenants:?}").contains("alice")
                && !format!("{tenants:?}").contains("token_sha256")
        );
    }
}
