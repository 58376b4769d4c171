//! Who may ask the API what: a pure decision per request, from the door it
//! came in by and its headers.
//!
//! - The unix socket in the run directory (root's alone) may do anything:
//!   it is how the command line, CNI and the tests talk to the router.
//! - Docker's plugin socket serves Docker's plugin protocol and nothing
//!   else.
//! - The TCP address (loopback by default) answers reads to anyone who
//!   can reach it; a change needs the token in `<run-dir>/api-token`
//!   (`Authorization: Bearer ...`). A `Host` that names anything but an IP
//!   literal or `localhost` is refused (DNS rebinding), and so is a
//!   request that carries an `Origin`, unless it is our own and the token
//!   comes with it: a web page the host's browser opens gets nothing.

use hyper::{HeaderMap, Method, StatusCode, header};

/// The listener a request came in by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Unix,
    Docker,
    Tcp,
}

/// Why a request is refused: the status and what the caller should do.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub status: StatusCode,
    pub message: String,
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        message: message.into(),
    }
}

/// Whether `path` belongs to Docker's plugin protocol.
pub fn is_docker_path(path: &str) -> bool {
    ["/Plugin.", "/NetworkDriver.", "/IpamDriver."]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The host part of a `Host` value, without the port.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// A `Host` an attacker's DNS name cannot stand for.
fn local_host(host: &str) -> bool {
    let name = host_name(host);
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Compares without an early exit, so the time taken says nothing about
/// how much of the token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    value.strip_prefix(b"Bearer ")
}

/// Whether a request may go on; `token` is this router's API token.
pub fn check(
    door: Door,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    token: &str,
) -> Result<(), Refusal> {
    match door {
        Door::Unix => return Ok(()),
        Door::Docker => {
            return if is_docker_path(path) {
                Ok(())
            } else {
                Err(refuse(
                    StatusCode::NOT_FOUND,
                    "this socket serves Docker's plugin protocol only",
                ))
            };
        }
        Door::Tcp => {}
    }
    if is_docker_path(path) {
        return Err(refuse(
            StatusCode::NOT_FOUND,
            "Docker's plugin protocol is served on its own socket only",
        ));
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !local_host(host) {
        return Err(refuse(
            StatusCode::MISDIRECTED_REQUEST,
            format!("Host {host:?} is not this router: use its address, or localhost"),
        ));
    }
    let authorized = bearer(headers).is_some_and(|t| same(t, token.as_bytes()));
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ours = origin.as_bytes() == format!("http://{host}").as_bytes();
        if !(ours && authorized) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "requests from web pages are refused",
            ));
        }
    }
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if reads {
        return Ok(());
    }
    if !authorized {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "changing the router over TCP needs its token (Authorization: Bearer, from <run-dir>/api-token); the command line uses the unix socket <run-dir>/weft.sock instead",
        ));
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|c| c.to_str().ok())
        .is_some_and(|c| c.starts_with("application/json"));
    if !json {
        return Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send JSON, with Content-Type: application/json",
        ));
    }
    Ok(())
}

/// A fresh token: 32 random bytes, hex.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0123456789abcdef";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    fn status(door: Door, method: Method, path: &str, pairs: &[(&'static str, &str)]) -> u16 {
        match check(door, &method, path, &headers(pairs), TOKEN) {
            Ok(()) => 200,
            Err(r) => r.status.as_u16(),
        }
    }

    #[test]
    fn reads_are_open_on_loopback_and_changes_need_the_token() {
        let host = ("host", "127.0.0.1:6784");
        assert_eq!(status(Door::Tcp, Method::GET, "/status", &[host]), 200);
        assert_eq!(status(Door::Tcp, Method::POST, "/stop", &[host]), 401);
        assert_eq!(
            status(
                Door::Tcp,
                Method::POST,
                "/ipam/release",
                &[
                    host,
                    ("authorization", "Bearer wrong"),
                    ("content-type", "application/json")
                ]
            ),
            401
        );
        let good = [
            host,
            ("authorization", "Bearer 0123456789abcdef"),
            ("content-type", "application/json"),
        ];
        assert_eq!(status(Door::Tcp, Method::POST, "/stop", &good), 200);
        // text/plain is what a page's form or fetch sends without a
        // preflight: never taken.
        let plain = [good[0], good[1], ("content-type", "text/plain")];
        assert_eq!(status(Door::Tcp, Method::POST, "/stop", &plain), 415);
        // The unix socket needs none of it.
        assert_eq!(status(Door::Unix, Method::POST, "/stop", &[]), 200);
    }

    #[test]
    fn foreign_hosts_and_origins_are_refused() {
        for host in [
            "evil.example",
            "evil.example:6784",
            "",
            "127.0.0.1.evil.example:6784",
        ] {
            assert_eq!(
                status(Door::Tcp, Method::GET, "/status", &[("host", host)]),
                421,
                "{host:?}"
            );
        }
        for host in ["localhost:6784", "[::1]:6784", "10.0.0.5:6784", "127.0.0.1"] {
            assert_eq!(
                status(Door::Tcp, Method::GET, "/status", &[("host", host)]),
                200,
                "{host}"
            );
        }
        let from_page = [
            ("host", "127.0.0.1:6784"),
            ("origin", "http://evil.example"),
        ];
        assert_eq!(status(Door::Tcp, Method::GET, "/report", &from_page), 403);
        // Our own page, with the token: allowed (the web page to come).
        let own = [
            ("host", "127.0.0.1:6784"),
            ("origin", "http://127.0.0.1:6784"),
            ("authorization", "Bearer 0123456789abcdef"),
            ("content-type", "application/json"),
        ];
        assert_eq!(status(Door::Tcp, Method::POST, "/connect", &own), 200);
        assert_eq!(status(Door::Tcp, Method::GET, "/report", &own[..2]), 403);
    }

    #[test]
    fn docker_paths_only_on_docker_s_socket_and_nothing_else_there() {
        let host = ("host", "127.0.0.1:6784");
        assert_eq!(
            status(Door::Tcp, Method::POST, "/NetworkDriver.Join", &[host]),
            404
        );
        assert_eq!(
            status(Door::Docker, Method::POST, "/NetworkDriver.Join", &[]),
            200
        );
        assert_eq!(
            status(Door::Docker, Method::POST, "/ipam/release", &[]),
            404
        );
        assert_eq!(status(Door::Docker, Method::POST, "/stop", &[]), 404);
    }

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.as_bytes()) && !same(a.as_bytes(), b.as_bytes()));
    }
}
