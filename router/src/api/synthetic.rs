//! A container's Synthetic Network door: a loopback port of its own on
//! which weft answers exactly what Synthetic Network's JavaScript client
//! and page ask for: `GET`/`POST /qos` (the container's conditions in
//! its JSON), `GET /top/ingress.profile` and `/top/egress.profile` (flow
//! top in its binary form, [`crate::flows::profile`]), and, given the
//! directory of its page (`frontend/client`), the page itself. Its client
//! knows only an address (the browser page not even that: it asks its own
//! origin), so the address is what names the container.
//!
//! Who may do what is [`super::access`]'s (`Door::Synthetic`): reads of
//! the API open on loopback, changes and the page with the token as Basic
//! credentials. Which doors are open is [`crate::condition::doors`]'s.

use std::{collections::BTreeMap, net::Ipv4Addr, path::Path, sync::Arc};

use http_body_util::Full;
use hyper::{
    Method, Request as HttpRequest, Response, StatusCode,
    body::{Bytes, Incoming},
    header,
};
use serde::Deserialize;

use super::{Api, access, condition::Form, json_of, serve_connection, text};
use crate::{
    condition::doors::{DoorInfo, DoorSetting},
    flows::profile::{self, Way},
};

type Answer = Result<Response<Full<Bytes>>, Response<Full<Bytes>>>;

/// Connections at once per door: its page and client need a handful.
const DOOR_CONNECTIONS: usize = 16;
/// Bounds on a page directory: files, bytes of one, bytes of all.
const UI_FILES: usize = 64;
const UI_FILE_BYTES: u64 = 2 << 20;
const UI_BYTES: u64 = 8 << 20;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DoorBody {
    /// 0: any free port.
    #[serde(default)]
    port: u16,
    #[serde(default)]
    ui: Option<std::path::PathBuf>,
}

/// A page's files, read when the door opens: a later change on disk, or
/// a link put there, is not served.
#[derive(Default)]
struct Page {
    files: BTreeMap<String, (&'static str, Bytes)>,
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A file name the page may be asked for: no path, nothing hidden.
fn servable_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Page {
    /// Reads the regular files directly in `dir` (not below it, not
    /// through links), within the bounds above.
    fn read(dir: &Path) -> Result<Page, String> {
        let hint = "give Synthetic Network's frontend/client directory";
        let entries = std::fs::read_dir(dir).map_err(|e| {
            format!(
                "cannot read the page directory {}: {e}; {hint}",
                dir.display()
            )
        })?;
        let mut page = Page::default();
        let mut total = 0;
        for entry in entries {
            let entry = entry.map_err(|e| format!("{}: {e}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let meta = std::fs::symlink_metadata(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            if !meta.is_file() || !servable_name(&name) {
                continue;
            }
            total += meta.len();
            if meta.len() > UI_FILE_BYTES || total > UI_BYTES || page.files.len() == UI_FILES {
                return Err(format!(
                    "{} holds more than a page ({UI_FILES} files, {} MiB each, {} MiB in all); {hint}",
                    dir.display(),
                    UI_FILE_BYTES >> 20,
                    UI_BYTES >> 20
                ));
            }
            let bytes = std::fs::read(entry.path())
                .map_err(|e| format!("cannot read {}: {e}", entry.path().display()))?;
            page.files
                .insert(name.clone(), (content_type(&name), Bytes::from(bytes)));
        }
        if !page.files.contains_key("control.html") {
            return Err(format!("{} has no control.html; {hint}", dir.display()));
        }
        Ok(page)
    }
}

/// Headers every answer of a door carries: nothing is cached, sniffed
/// or framed by another page.
fn door_headers(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, "no-store".parse().expect("valid"));
    h.insert("x-content-type-options", "nosniff".parse().expect("valid"));
    h.insert("x-frame-options", "DENY".parse().expect("valid"));
    response
}

fn bytes(content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body))
        .expect("valid response")
}

impl Api {
    /// `GET /synthetic` lists the open doors; `POST /synthetic/<id>`
    /// opens one (again); `DELETE /synthetic/<id>` closes it.
    pub(super) async fn synthetic_door(&self, method: &Method, id: &str, body: &Bytes) -> Answer {
        let network = self
            .network
            .as_ref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no overlay network here\n"))?;
        let doors = &network.conditioning.doors;
        let stored = |e: crate::condition::ConditionError| {
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        };
        match (method, id) {
            (&Method::GET, "") => {
                let list: Vec<DoorInfo> = doors
                    .list()
                    .into_iter()
                    .map(|(id, s)| DoorInfo::new(&id, s))
                    .collect();
                Ok(json_of(&list))
            }
            (_, "") => Err(text(
                StatusCode::NOT_FOUND,
                "name the container: /synthetic/<id>\n",
            )),
            (&Method::DELETE, id) => {
                if let Some(ending) = doors.close(id).map_err(stored)? {
                    let _ = ending.await;
                    Ok(text(StatusCode::OK, ""))
                } else {
                    Err(text(
                        StatusCode::NOT_FOUND,
                        format!("{id} has no Synthetic Network door open\n"),
                    ))
                }
            }
            (&Method::POST, id) => {
                let body: DoorBody = serde_json::from_slice(body).map_err(|e| {
                    text(
                        StatusCode::BAD_REQUEST,
                        format!("expected {{\"port\": 0, \"ui\": null}}: {e}\n"),
                    )
                })?;
                let setting = DoorSetting {
                    port: body.port,
                    ui: body.ui,
                };
                let opened = self.open_door(id, setting).await?;
                Ok(json_of(&DoorInfo::new(id, opened)))
            }
            (method, _) => Err(text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("no {method} on a door; POST opens, DELETE closes\n"),
            )),
        }
    }

    /// Opens `id`'s door as `setting` says (port 0: any free one) and
    /// returns what it is. Refused, with the old door still open, when
    /// the container is not attached, the page cannot be read or the
    /// port cannot be had.
    async fn open_door(
        &self,
        id: &str,
        setting: DoorSetting,
    ) -> Result<DoorSetting, Response<Full<Bytes>>> {
        let network = self
            .network
            .as_ref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no overlay network here\n"))?;
        let doors = &network.conditioning.doors;
        if network.registry.lock().await.get(id).is_none() {
            return Err(text(
                StatusCode::NOT_FOUND,
                format!("{id} is not attached here; `weft ps` lists what is\n"),
            ));
        }
        let previous = doors.list().remove(id);
        // Asking again for what is open (any port: the one it has) keeps
        // it: running the command twice does not move the door.
        if let Some(open) = &previous
            && (setting.port == 0 || setting.port == open.port)
            && setting.ui == open.ui
        {
            return Ok(open.clone());
        }
        let page = match &setting.ui {
            Some(dir) => Page::read(dir).map_err(|e| text(StatusCode::BAD_REQUEST, e + "\n"))?,
            None => Page::default(),
        };
        // The same port again (a new page): the old listener must let go
        // of it first.
        let same_port = previous.as_ref().is_some_and(|p| p.port == setting.port);
        if same_port && let Ok(Some(ending)) = doors.close(id) {
            let _ = ending.await;
        }
        let listener = match tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, setting.port))
            .await
        {
            Ok(l) => l,
            Err(e) => {
                if let (true, Some(previous)) = (same_port, previous) {
                    Box::pin(self.open_door(id, previous)).await.ok();
                }
                return Err(text(
                    StatusCode::CONFLICT,
                    format!(
                        "cannot listen on 127.0.0.1:{}: {e}; choose another port, or 0 for any\n",
                        setting.port
                    ),
                ));
            }
        };
        let port = listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or(setting.port);
        let opened = DoorSetting { port, ..setting };
        let task = tokio::spawn(self.clone().serve_door(id.into(), listener, Arc::new(page)));
        doors
            .insert(id, opened.clone(), task)
            .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")))?;
        tracing::info!(container = %id, port, page = opened.ui.is_some(), "Synthetic Network door open");
        Ok(opened)
    }

    /// Opens the doors the last router had, for containers still here.
    pub async fn restore_doors(&self) {
        let Some(network) = &self.network else { return };
        for (id, setting) in network.conditioning.doors.to_restore() {
            if let Err(refusal) = self.open_door(&id, setting).await {
                let why = http_body_util::BodyExt::collect(refusal.into_body())
                    .await
                    .map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_string())
                    .unwrap_or_default();
                tracing::warn!(container = %id, reason = %why, "cannot open its Synthetic Network door again");
            }
        }
    }

    /// Accepts on a door until it is closed (its task aborted).
    async fn serve_door(self, id: Arc<str>, listener: tokio::net::TcpListener, page: Arc<Page>) {
        let limit = Arc::new(tokio::sync::Semaphore::new(DOOR_CONNECTIONS));
        let mut turned_away =
            crate::daemon::throttle::Summary::new(std::time::Duration::from_secs(60));
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Ok(permit) = limit.clone().try_acquire_owned() else {
                if let Some(n) = turned_away.count(std::time::Instant::now()) {
                    tracing::warn!(container = %id, turned_away = n, limit = DOOR_CONNECTIONS, "Synthetic Network door connections over the limit closed");
                }
                continue;
            };
            let (api, id, page) = (self.clone(), id.clone(), page.clone());
            serve_connection(stream, permit, move |req| {
                let (api, id, page) = (api.clone(), id.clone(), page.clone());
                async move { Ok(door_headers(api.door_http(&id, &page, req).await)) }
            });
        }
    }

    async fn door_http(
        &self,
        id: &str,
        page: &Page,
        req: HttpRequest<Incoming>,
    ) -> Response<Full<Bytes>> {
        let (parts, body) = req.into_parts();
        let body = match self.admit(access::Door::Synthetic, &parts, body).await {
            Ok(body) => body,
            Err(mut answer) => {
                // A browser asks for the credentials, then sends them on.
                if answer.status() == StatusCode::UNAUTHORIZED {
                    let realm = format!("Basic realm=\"weft: {id}\", charset=\"UTF-8\"");
                    if let Ok(value) = realm.parse() {
                        answer.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                    }
                }
                return answer;
            }
        };
        match self
            .door_route(id, page, &parts.method, parts.uri.path(), &body)
            .await
        {
            Ok(answer) | Err(answer) => answer,
        }
    }

    async fn door_route(
        &self,
        id: &str,
        page: &Page,
        method: &Method,
        path: &str,
        body: &Bytes,
    ) -> Answer {
        match (method, path) {
            (&Method::GET | &Method::POST, "/qos") => {
                self.conditions(method, Form::Synthetic, id, body).await
            }
            (&Method::GET, "/top/ingress.profile" | "/top/egress.profile") => {
                let way = if path.contains("ingress") {
                    Way::Ingress
                } else {
                    Way::Egress
                };
                let report = self.flows_report(true).await?;
                let container = report
                    .containers
                    .iter()
                    .find(|c| c.id == id)
                    .ok_or_else(|| {
                        text(
                            StatusCode::NOT_FOUND,
                            format!("{id} is not attached here; `weft ps` lists what is\n"),
                        )
                    })?;
                Ok(bytes(
                    "application/octet-stream",
                    Bytes::from(profile::encode(container, way)),
                ))
            }
            (&Method::GET, "/") if page.files.contains_key("control.html") => {
                Ok(Response::builder()
                    .status(StatusCode::FOUND)
                    .header(header::LOCATION, "/control.html")
                    .body(Full::new(Bytes::new()))
                    .expect("valid response"))
            }
            (&Method::GET, p) => match page.files.get(p.trim_start_matches('/')) {
                Some((kind, body)) => Ok(bytes(kind, body.clone())),
                None => Err(text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "no {p} on {id}'s Synthetic Network door: it answers /qos, /top/ingress.profile and /top/egress.profile{}\n",
                        if page.files.is_empty() {
                            ", and its page with --ui DIR"
                        } else {
                            " and its page"
                        }
                    ),
                )),
            },
            (method, p) => Err(text(
                StatusCode::NOT_FOUND,
                format!("no {method} {p} on {id}'s Synthetic Network door\n"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_its_directory_s_plain_files_and_nothing_else() {
        let dir = std::env::temp_dir().join(format!("weft-page-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        for (name, body) in [
            ("control.html", "<html></html>"),
            ("ui.js", "//"),
            (".secret", "no"),
            ("sub/x.js", "no"),
        ] {
            std::fs::write(dir.join(name), body).unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", dir.join("passwd.txt")).unwrap();
        let page = Page::read(&dir).unwrap();
        let names: Vec<&str> = page.files.keys().map(String::as_str).collect();
        assert_eq!(names, ["control.html", "ui.js"]);
        assert_eq!(page.files["ui.js"].0, "text/javascript; charset=utf-8");
        std::fs::remove_file(dir.join("control.html")).unwrap();
        let err = Page::read(&dir).err().unwrap();
        assert!(err.contains("no control.html"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(Page::read(&dir).err().unwrap().contains("cannot read"));
    }

    #[test]
    fn only_plain_names_are_served() {
        for good in ["control.html", "ui.js", "a-b_c.css"] {
            assert!(servable_name(good), "{good}");
        }
        for bad in ["", ".htaccess", "../x", "a/b", "a%2fb", "a b"] {
            assert!(!servable_name(bad), "{bad}");
        }
    }
}
