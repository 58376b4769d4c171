//! The mesh's name service: containers registered by name on any host
//! answer on every host (weaveDNS's job), and a name may wait for its
//! server to listen (AppSwitch's dependency ordering).
//!
//! `name` checks and normalizes names, `records` is the gossiped record
//! set and `responder` decides DNS answers (all three pure); `server` is
//! the DNS server's I/O, `ready` reads a namespace's listeners, and this
//! module carries requests to the record set and keeps our own names on
//! disk.

pub mod name;
pub mod ready;
pub mod records;
pub mod responder;
pub mod server;

use std::{net::Ipv4Addr, path::Path, time::Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use self::{
    name::{Fqdn, NameSpec},
    records::{Key, Names, Value},
};

/// The owner of names added by hand (`weft dns-add`).
pub const EXTERN_OWNER: &str = "weft:extern";

/// What the API and the router's tasks ask of the names; carried out on
/// the router task, so the mesh sends the change at once.
#[derive(Debug)]
pub enum NamesRequest {
    /// Registers `specs` for `addr` of `owner`; answers how many were new.
    Add {
        specs: Vec<NameSpec>,
        addr: Ipv4Addr,
        owner: String,
        reply: oneshot::Sender<usize>,
    },
    /// Removes our names that match every filter given; answers how many.
    Remove {
        owner: Option<String>,
        addr: Option<Ipv4Addr>,
        name: Option<Fqdn>,
        reply: oneshot::Sender<usize>,
    },
    /// Whether something listens on an instance's port now.
    Ready { key: Key, ready: bool },
}

impl NamesRequest {
    pub fn apply(self, names: &mut Names, now: Instant) {
        match self {
            NamesRequest::Add {
                specs,
                addr,
                owner,
                reply,
            } => {
                let mut added = 0;
                for spec in specs {
                    let key = Key {
                        name: spec.name,
                        addr,
                        owner: owner.clone(),
                    };
                    added += usize::from(names.add(now, key, spec.port));
                }
                let _ = reply.send(added);
            }
            NamesRequest::Remove {
                owner,
                addr,
                name,
                reply,
            } => {
                let _ = reply.send(names.remove(now, owner.as_deref(), addr, name.as_ref()));
            }
            NamesRequest::Ready { key, ready } => names.set_ready(now, &key, ready),
        }
    }
}

/// Our own names as stored in the data directory: what a restart takes
/// back.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub clock: u64,
    pub entries: Vec<(Key, Value)>,
}

impl Stored {
    pub fn of(names: &Names) -> Stored {
        let (clock, entries) = names.snapshot();
        Stored { clock, entries }
    }

    /// The file's contents, or nothing if there is no file yet.
    pub fn load(path: &Path) -> anyhow::Result<Option<Stored>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!(
                    "the names in {} are unreadable ({e}); move the file aside to start with no names on this host",
                    path.display()
                )
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }

    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("names serialize");
        crate::state_file::replace(path, &json)
    }
}

/// The name service as the router's tasks share it: the record set, the
/// DNS server's settings and counters, and where it serves.
pub struct NameService {
    pub names: records::NamesHandle,
    pub config: server::DnsConfig,
    pub counters: std::sync::Arc<server::DnsCounters>,
    /// False with `--no-dns`: names are still kept and gossiped (other
    /// hosts may serve them), but not served here.
    pub enabled: bool,
    /// Where DNS is served now.
    pub listening: std::sync::Mutex<Vec<std::net::SocketAddr>>,
}

impl NameService {
    pub fn domain(&self) -> &Fqdn {
        &self.config.zone.domain
    }

    /// What the report says of the name service.
    pub fn report(&self) -> crate::api::report::DnsReport {
        let serving = self
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|a| a.to_string())
            .collect();
        crate::api::report::DnsReport {
            enabled: self.enabled,
            domain: self.domain().to_string(),
            serving,
            names: self.names.lock().name_count(),
        }
    }

    /// Checks `names` as given by a user, all or none.
    pub fn specs(&self, names: &[String]) -> Result<Vec<NameSpec>, name::NameError> {
        names
            .iter()
            .map(|n| NameSpec::parse(n, self.domain()))
            .collect()
    }

    /// The text of `weft status dns`.
    pub fn status_text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let listening = self
            .listening
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let _ = writeln!(out, "Domain: {}", self.domain());
        let served = if !self.enabled {
            "off (--no-dns)".to_string()
        } else if listening.is_empty() {
            "nowhere yet: the host has no gateway (weft expose)".to_string()
        } else {
            listening
                .iter()
                .map(|a| format!("{a} (udp, tcp)"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(out, "Serving: {served}");
        let upstreams: Vec<String> = self
            .config
            .upstreams
            .iter()
            .map(|u| u.to_string())
            .collect();
        let _ = writeln!(
            out,
            "Upstream: {}",
            if upstreams.is_empty() {
                "none (other names fail)".to_string()
            } else {
                upstreams.join(", ")
            }
        );
        let _ = writeln!(
            out,
            "TTL: {} s; a name waits up to {} s for a listener",
            self.config.zone.ttl,
            self.config.wait.as_secs()
        );
        let counters: Vec<String> = self
            .counters
            .snapshot()
            .into_iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        let _ = writeln!(out, "Queries: {}", counters.join(", "));
        let (all, count) = {
            let names = self.names.lock();
            (names.all(), names.name_count())
        };
        let _ = writeln!(out, "Names: {count} ({} instances)\n", all.len());
        let mut rows = Vec::new();
        for (name, i) in all {
            rows.push(vec![
                name.to_string(),
                i.addr.to_string(),
                i.port.map_or("-".into(), |p| p.to_string()),
                if i.ready { "yes" } else { "no" }.into(),
                i.origin.to_string(),
                i.owner,
            ]);
        }
        let headers = ["NAME", "ADDRESS", "PORT", "READY", "ORIGIN", "OWNER"];
        out += &crate::api::report::table(&headers, &rows);
        out
    }
}
