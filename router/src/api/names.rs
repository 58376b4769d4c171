//! The names routes: `POST /dns/add`, `/dns/remove`, `/dns/lookup`,
//! `GET /dns/args` and `/status/dns`; and registering an attached
//! container's names.

use std::net::Ipv4Addr;

use http_body_util::Full;
use hyper::{Response, StatusCode, body::Bytes};
use serde::Deserialize;

use super::{Api, parse, text};
use crate::{
    daemon::router::Request,
    names::{EXTERN_OWNER, NameService, NamesRequest, name::Fqdn, name::NameSpec},
};

type Answer<T> = Result<T, Response<Full<Bytes>>>;

fn bad(message: String) -> Response<Full<Bytes>> {
    text(
        StatusCode::BAD_REQUEST,
        message.trim_end().to_string() + "\n",
    )
}

#[derive(Deserialize)]
struct NamesBody {
    address: Ipv4Addr,
    #[serde(default)]
    names: Vec<String>,
}

#[derive(Deserialize)]
struct LookupBody {
    name: String,
}

impl Api {
    async fn names(&self) -> Answer<&NameService> {
        self.names
            .as_deref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no name service here\n"))
    }

    /// Registers checked names for an address, on the router task.
    pub(super) async fn add_names(
        &self,
        specs: Vec<NameSpec>,
        addr: Ipv4Addr,
        owner: String,
    ) -> Answer<usize> {
        self.ask(|reply| {
            Request::Names(NamesRequest::Add {
                specs,
                addr,
                owner,
                reply,
            })
        })
        .await
    }

    /// Removes the names of `owner` (at `addr` only, if given).
    pub(super) async fn remove_names(
        &self,
        owner: Option<String>,
        addr: Option<Ipv4Addr>,
        name: Option<Fqdn>,
    ) -> Answer<usize> {
        self.ask(|reply| {
            Request::Names(NamesRequest::Remove {
                owner,
                addr,
                name,
                reply,
            })
        })
        .await
    }

    pub(super) async fn dns(&self, path: &str, body: &Bytes) -> Answer<Response<Full<Bytes>>> {
        let service = self.names().await?;
        match path {
            "/dns/add" => {
                let b: NamesBody =
                    parse(body, r#"{"address": "10.32.0.5", "names": ["db"]}"#).map_err(bad)?;
                if b.names.is_empty() {
                    return Err(bad("give at least one name".into()));
                }
                let specs = service.specs(&b.names).map_err(|e| bad(e.to_string()))?;
                if specs.iter().any(|s| s.port.is_some()) {
                    return Err(bad(
                        "a port (NAME:PORT) is for attached containers, whose listeners weft can see: weft attach --name NAME:PORT".into(),
                    ));
                }
                let added = self
                    .add_names(specs, b.address, EXTERN_OWNER.into())
                    .await?;
                Ok(text(StatusCode::OK, format!("{added} name(s) added\n")))
            }
            "/dns/remove" => {
                let b: NamesBody =
                    parse(body, r#"{"address": "10.32.0.5", "names": ["db"]}"#).map_err(bad)?;
                let specs = service.specs(&b.names).map_err(|e| bad(e.to_string()))?;
                let mut removed = 0;
                if specs.is_empty() {
                    removed = self.remove_names(None, Some(b.address), None).await?;
                }
                for spec in specs {
                    removed += self
                        .remove_names(None, Some(b.address), Some(spec.name))
                        .await?;
                }
                if removed == 0 {
                    return Err(text(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no such name of {} was registered on this host; `weft status dns` lists them, with the host each came from\n",
                            b.address
                        ),
                    ));
                }
                Ok(text(StatusCode::OK, format!("{removed} name(s) removed\n")))
            }
            "/dns/lookup" => {
                let b: LookupBody = parse(body, r#"{"name": "db"}"#).map_err(bad)?;
                let name =
                    Fqdn::in_domain(&b.name, service.domain()).map_err(|e| bad(e.to_string()))?;
                let instances = service.names.lock().lookup(&name);
                if instances.is_empty() {
                    return Err(text(
                        StatusCode::NOT_FOUND,
                        format!("{name}: no such name\n"),
                    ));
                }
                let mut out = String::new();
                for i in instances {
                    let waiting = if i.ready { "" } else { " (not listening yet)" };
                    out += &format!("{}{waiting}\n", i.addr);
                }
                Ok(text(StatusCode::OK, out))
            }
            _ => Err(text(StatusCode::NOT_FOUND, "no such route\n")),
        }
    }

    /// `weft dns-args`: what a container run needs to resolve the mesh's
    /// names here.
    pub(super) async fn dns_args(&self) -> Answer<Response<Full<Bytes>>> {
        let service = self.names().await?;
        let listening = service
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(server) = listening.first() else {
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                if service.enabled {
                    "DNS is not served yet: the host has no gateway on the weft network (weft expose)\n"
                } else {
                    "DNS is off: the router runs with --no-dns\n"
                },
            ));
        };
        let domain = service.domain().as_str().trim_end_matches('.');
        Ok(text(
            StatusCode::OK,
            format!("--dns {} --dns-search {domain}\n", server.ip()),
        ))
    }

    pub(super) async fn dns_status(&self) -> Answer<Response<Full<Bytes>>> {
        Ok(text(StatusCode::OK, self.names().await?.status_text()))
    }
}
