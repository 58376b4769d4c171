#![no_main]
//! Any method, path and headers at the API's TCP door and at a container's
//! Synthetic Network door: a decision, never a panic; and no request
//! without the token changes anything.

use hyper::{HeaderMap, Method, header::HeaderName, header::HeaderValue};
use libfuzzer_sys::fuzz_target;
use weft_router::api::access::{Door, check};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = lines.next().and_then(|m| Method::from_bytes(m.as_bytes()).ok());
    let path = lines.next().unwrap_or("/");
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.trim().as_bytes()), HeaderValue::from_str(v.trim())) {
                headers.append(k, v);
            }
        }
    }
    let method = method.unwrap_or(Method::POST);
    // The token as a bearer token, or as Basic credentials of user weft
    // (base64 of "weft:the-token").
    let authorized = headers.get_all("authorization").iter().any(|v| {
        v.as_bytes() == b"Bearer the-token" || v.as_bytes() == b"Basic d2VmdDp0aGUtdG9rZW4="
    });
    for door in [Door::Tcp, Door::Synthetic] {
        let allowed = check(door, &method, path, &headers, "the-token").is_ok();
        if allowed && !matches!(method, Method::GET | Method::HEAD) {
            assert!(authorized, "a change without the token passed at {door:?}");
        }
        // A Synthetic Network door reads its API openly; anything else
        // there (its page) needs the token too.
        let api_read = matches!(path, "/qos" | "/top/ingress.profile" | "/top/egress.profile");
        if door == Door::Synthetic && allowed && !api_read {
            assert!(authorized, "the page of a door without the token");
        }
    }
});
