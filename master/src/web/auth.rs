//! `--ui-auth`: every request but the probes must carry the shared secret, as HTTP basic
//! auth (any user name, the secret as password) for browsers, or as a bearer token for
//! programs such as Prometheus.

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::Engine;

use crate::actor::MasterHandle;

pub async fn require_secret(
    State(master): State<MasterHandle>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| presented_secret(v.as_bytes()));
    // `--ui-auth` is refused without a secret, so `accepts` never waves a request through.
    let accepted = master.config.secret.is_some()
        && presented.is_some_and(|p| master.config.secret_check().accepts(&p));
    if accepted {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "this Hearth UI asks for the cluster's shared secret: sign in with any user name and \
         the secret as password, or send `Authorization: Bearer <secret>`\n",
    )
        .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"hearth\", charset=\"UTF-8\""),
    );
    response
}

/// The secret an `Authorization` header carries: a bearer token, or a basic-auth password.
fn presented_secret(header: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(header).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::presented_secret;

    #[test]
    fn reads_bearer_tokens_and_basic_passwords() {
        assert_eq!(presented_secret(b"Bearer s3cret"), Some(b"s3cret".to_vec()));
        // "admin:s3:cret" — the password may itself hold a colon.
        assert_eq!(
            presented_secret(b"Basic YWRtaW46czM6Y3JldA=="),
            Some(b"s3:cret".to_vec())
        );
        assert_eq!(presented_secret(b"Basic !!!"), None);
        assert_eq!(presented_secret(b"Digest x"), None);
        assert_eq!(presented_secret(b"Bearer"), None);
    }
}
