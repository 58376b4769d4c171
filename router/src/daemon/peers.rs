//! The peers a router remembers across restarts (`<data-dir>/peers.json`):
//! those it was given and those it was connected to. A router started
//! again with no peers dials them at once, so a restart does not leave it
//! alone, nor its containers cut off until the others' retries come round
//! (`--no-resume` starts afresh). And peer names that do not resolve yet
//! are tried again in the background instead of stopping the launch.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::router::{Request, ask};

/// What is remembered.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remembered {
    /// Peers given on the command line or to `weft connect`, as given.
    pub given: BTreeSet<String>,
    /// Where the peers this router was connected to accept connections.
    pub seen: BTreeSet<SocketAddr>,
}

impl Remembered {
    /// What the file says; a missing file is nothing remembered, and a
    /// damaged one too (it is a convenience, never a source of truth):
    /// said in the log.
    pub fn load(path: &Path) -> Remembered {
        match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
                tracing::warn!(file = %path.display(), error = %e, "remembered peers unreadable: starting without them");
                Remembered::default()
            }),
            Err(_) => Remembered::default(),
        }
    }

    /// Writes the file whole and renames it into place.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("peers serialize");
        crate::state_file::replace(path, text.as_bytes())
    }
}

/// Names that did not resolve yet, with why, as `weft status targets`
/// shows them.
pub type Unresolved = Arc<Mutex<BTreeMap<String, String>>>;

/// The router's side: what it was given and saw, written down when it
/// changes.
pub struct PeerMemory {
    pub file: std::path::PathBuf,
    /// Peers given, as given (names stay names).
    pub given: BTreeSet<String>,
    pub seen: BTreeSet<SocketAddr>,
    /// What the file holds now.
    pub saved: Remembered,
    /// Where each peer given resolved, so that forgetting an address
    /// forgets the name given for it too.
    pub resolved: BTreeMap<String, SocketAddr>,
    pub unresolved: Unresolved,
}

impl PeerMemory {
    /// Writes the file if what is remembered changed.
    pub fn save_if_changed(&mut self) {
        let now = Remembered {
            given: self.given.clone(),
            seen: self.seen.clone(),
        };
        if now == self.saved {
            return;
        }
        match now.save(&self.file) {
            Ok(()) => self.saved = now,
            Err(e) => {
                tracing::warn!(file = %self.file.display(), error = %e, "cannot remember the peers")
            }
        }
    }

    /// Remembers a peer `given` (as given), which resolved to `address`.
    pub fn remember(&mut self, given: String, address: SocketAddr) {
        self.resolved.insert(given.clone(), address);
        self.given.insert(given);
    }

    /// Forgets `address` as seen, and every peer given that resolved to
    /// it or is written `as_given`.
    pub fn forget(&mut self, as_given: Option<&str>, address: SocketAddr) {
        self.seen.remove(&address);
        self.given.remove(&address.to_string());
        if let Some(given) = as_given {
            self.given.remove(given);
            self.resolved.remove(given);
        }
        let names: Vec<String> = self
            .resolved
            .iter()
            .filter(|(_, a)| **a == address)
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.given.remove(&name);
            self.resolved.remove(&name);
        }
    }

    /// Forgets every peer given, resolved or not (`connect --replace`).
    pub fn forget_given(&mut self) {
        self.given.clear();
        self.resolved.clear();
        self.unresolved
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// Tries each of `names` again, every few seconds at first and then every
/// minute, until it resolves; then hands the router its address.
pub async fn resolve_later(
    names: Vec<String>,
    requests: mpsc::Sender<Request>,
    unresolved: Unresolved,
) {
    let mut wait = Duration::from_secs(2);
    let mut left = names;
    while !left.is_empty() {
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(60));
        let mut still = Vec::new();
        for name in left {
            let resolved = crate::api::resolve_peer(&name).await;
            // Settled under the lock, sent after it.
            let address = {
                let mut pending = unresolved.lock().unwrap_or_else(|p| p.into_inner());
                // Gone from the list: forgotten or replaced meanwhile.
                let Some(why) = pending.get_mut(&name) else {
                    continue;
                };
                match resolved {
                    Ok(address) => {
                        pending.remove(&name);
                        address
                    }
                    Err(e) => {
                        *why = e;
                        still.push(name);
                        continue;
                    }
                }
            };
            tracing::info!(peer = %name, %address, "peer name resolved");
            // Asked as given: the name is remembered, not its address as
            // well.
            let sent = ask(&requests, |done| Request::Connect {
                peers: vec![(name.clone(), address)],
                replace: false,
                done,
            })
            .await;
            if sent.is_none() {
                return;
            }
        }
        left = still;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_peers_round_trip_and_a_damaged_file_is_nothing() {
        let dir = std::env::temp_dir().join(format!("weft-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("peers.json");
        assert_eq!(Remembered::load(&path), Remembered::default());
        let r = Remembered {
            given: ["h1.example:6783".to_string()].into(),
            seen: ["192.0.2.2:6783".parse().unwrap()].into(),
        };
        r.save(&path).unwrap();
        assert_eq!(Remembered::load(&path), r);
        std::fs::write(&path, "{").unwrap();
        assert_eq!(Remembered::load(&path), Remembered::default());
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn memory() -> PeerMemory {
        PeerMemory {
            file: "/nonexistent/peers.json".into(),
            given: BTreeSet::new(),
            seen: BTreeSet::new(),
            saved: Remembered::default(),
            resolved: BTreeMap::new(),
            unresolved: Unresolved::default(),
        }
    }

    #[test]
    fn forgetting_an_address_forgets_the_name_given_for_it() {
        let mut m = memory();
        let a: SocketAddr = "192.0.2.2:6783".parse().unwrap();
        let b: SocketAddr = "192.0.2.3:6783".parse().unwrap();
        m.remember("h2.example".into(), a);
        m.remember("192.0.2.3:6783".into(), b);
        m.seen.insert(a);
        // Resolved again later: still one entry, the name.
        m.remember("h2.example".into(), a);
        assert_eq!(m.given.len(), 2);
        m.forget(None, a);
        assert_eq!(m.given, ["192.0.2.3:6783".to_string()].into());
        assert!(m.seen.is_empty());
        m.forget(Some("192.0.2.3:6783"), b);
        assert!(m.given.is_empty());
    }

    #[test]
    fn replacing_forgets_names_still_resolving() {
        let mut m = memory();
        m.given.insert("later.example".into());
        m.unresolved
            .lock()
            .unwrap()
            .insert("later.example".into(), "no such host".into());
        m.remember("h2.example".into(), "192.0.2.2:6783".parse().unwrap());
        m.forget_given();
        assert!(m.given.is_empty());
        assert!(m.unresolved.lock().unwrap().is_empty());
    }
}
