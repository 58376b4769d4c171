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
//!   request that carries an `Origin` other than our own: a web page the
//!   host's browser opens elsewhere gets nothing, and our own page
//!   (`/ui`) reads as anyone on loopback and changes with the token.
//! - A container's Synthetic Network door (a loopback port of its own,
//!   [`super::synthetic`]) keeps the same Host and Origin rules. Its API
//!   reads (`/qos`, `/top/...`) are open; a change, and the page itself,
//!   need the token, which Synthetic Network's client can only send as
//!   HTTP Basic credentials (user `weft`, the token as password): a
//!   browser asks for them once on the page and sends them with every
//!   request of the page after.

use hyper::{HeaderMap, Method, StatusCode, header};

/// The listener a request came in by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Door {
    Unix,
    Docker,
    Tcp,
    Synthetic,
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

/// Whether the request carries `token`: as a bearer token, or as HTTP
/// Basic credentials of user `weft` (what a browser or Synthetic
/// Network's client can send). The Basic form is compared encoded, so no
/// decoder reads what a caller sends.
fn carries(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) else {
        return false;
    };
    if let Some(bearer) = value.strip_prefix(b"Bearer ") {
        return same(bearer, token.as_bytes());
    }
    value
        .strip_prefix(b"Basic ")
        .is_some_and(|basic| same(basic, base64(format!("weft:{token}").as_bytes()).as_bytes()))
}

/// Standard base64 with padding (RFC 4648), for Basic credentials.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Paths of a Synthetic Network door that only read the container's
/// conditions and flows: what its client fetches without credentials.
fn synthetic_read(path: &str) -> bool {
    matches!(
        path,
        "/qos" | "/top/ingress.profile" | "/top/egress.profile"
    )
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
        Door::Tcp | Door::Synthetic => {}
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
    let authorized = carries(headers, token);
    if let Some(origin) = headers.get(header::ORIGIN) {
        // Our own page (weft ui, a door's page) may read, and change with
        // the token like anyone; no other page may do either.
        if origin.as_bytes() != format!("http://{host}").as_bytes() {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "requests from other web pages are refused",
            ));
        }
    }
    let reads = matches!(*method, Method::GET | Method::HEAD);
    if reads && (door == Door::Tcp || synthetic_read(path)) {
        return Ok(());
    }
    if door == Door::Synthetic && !authorized {
        return Err(refuse(
            StatusCode::UNAUTHORIZED,
            "this container's Synthetic Network door needs the router's token: user weft, the token (<run-dir>/api-token) as password",
        ));
    }
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
        // Without it, our page reads (its scripts are fetched with an
        // Origin) but changes nothing.
        assert_eq!(status(Door::Tcp, Method::GET, "/report", &own[..2]), 200);
        let own_json = [own[0], own[1], own[3]];
        assert_eq!(status(Door::Tcp, Method::POST, "/connect", &own_json), 401);
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
    fn a_synthetic_network_door_reads_openly_and_changes_with_basic_credentials() {
        let host = ("host", "127.0.0.1:40123");
        for path in ["/qos", "/top/ingress.profile", "/top/egress.profile"] {
            assert_eq!(status(Door::Synthetic, Method::GET, path, &[host]), 200);
        }
        // The page asks for the credentials the browser will send on.
        assert_eq!(
            status(Door::Synthetic, Method::GET, "/control.html", &[host]),
            401
        );
        let json = ("content-type", "application/json");
        assert_eq!(
            status(Door::Synthetic, Method::POST, "/qos", &[host, json]),
            401
        );
        // base64("weft:0123456789abcdef"), as Node's `auth` option or a
        // browser would send it.
        let basic = ("authorization", "Basic d2VmdDowMTIzNDU2Nzg5YWJjZGVm");
        assert_eq!(base64(b"weft:0123456789abcdef"), &basic.1[6..]);
        assert_eq!(
            status(Door::Synthetic, Method::POST, "/qos", &[host, json, basic]),
            200
        );
        assert_eq!(
            status(
                Door::Synthetic,
                Method::GET,
                "/control.html",
                &[host, basic]
            ),
            200
        );
        // Another user, or the token as user name, is not it.
        for wrong in [
            "Basic YWRtaW46MDEyMzQ1Njc4OWFiY2RlZg==", // admin:0123456789abcdef
            "Basic MDEyMzQ1Njc4OWFiY2RlZjo=",         // 0123456789abcdef:
            "Basic d2VmdDowMTIzNDU2Nzg5YWJjZGVm ",
        ] {
            let auth = ("authorization", wrong);
            assert_eq!(
                status(Door::Synthetic, Method::POST, "/qos", &[host, json, auth]),
                401
            );
        }
        // Its page's own origin may post; another page may not even read.
        let own = ("origin", "http://127.0.0.1:40123");
        assert_eq!(
            status(
                Door::Synthetic,
                Method::POST,
                "/qos",
                &[host, json, basic, own]
            ),
            200
        );
        let evil = ("origin", "http://evil.example");
        assert_eq!(
            status(Door::Synthetic, Method::GET, "/qos", &[host, evil]),
            403
        );
        assert_eq!(
            status(
                Door::Synthetic,
                Method::GET,
                "/qos",
                &[("host", "evil.example:40123")]
            ),
            421
        );
        // The TCP API takes the same Basic credentials as a bearer token.
        let on_tcp = [("host", "127.0.0.1:6784"), json, basic];
        assert_eq!(status(Door::Tcp, Method::POST, "/stop", &on_tcp), 200);
    }

    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn tokens_are_long_and_differ() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(a.as_bytes(), a.as_bytes()) && !same(a.as_bytes(), b.as_bytes()));
    }
}
