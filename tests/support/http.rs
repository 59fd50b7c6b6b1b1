//! Plain HTTP to a web port (`host:port`), through `hearth-testkit`'s client.

/// A GET: status code and body.
pub fn http_get(host_port: &str, path: &str) -> (u16, String) {
    let (status, _, body) = http_request(host_port, "GET", path, &[], "");
    (status, body)
}

/// A request with extra headers and a body: status code, head (`name: value` lines, names in
/// lower case) and body.
pub fn http_request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let reply = hearth_testkit::http::request(host_port, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{e}"));
    (reply.status, reply.head, reply.body)
}

/// A GET that reports a failed connection instead of failing the test.
pub fn try_http_get(host_port: &str, path: &str) -> Result<(u16, String), hearth_testkit::Error> {
    hearth_testkit::http::get(host_port, path)
}
