//! The router's side of IPAM: the agent's state on disk (redb), the agent
//! as the mesh's `ipam` gossip channel, and answers to the API.
//!
//! One rule makes it crash-safe: whatever the agent changed is committed
//! to disk before any message it queued leaves and before any caller
//! hears of an address. A crash can lose a request, never an answer.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Instant,
};

use redb::TableDefinition;
use tokio::sync::oneshot;
use weft_ipam::{Allocation, Ipam, IpamError, OpId, Outgoing as IpamOutgoing, Peer, Status};

use crate::{
    api::report::table,
    identity::PeerName,
    mesh::{Channel, Outgoing},
};

/// The mesh channel IPAM gossips on.
pub const CHANNEL: &str = "ipam";

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("ipam");
const KEY: &str = "state";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the IPAM state in {path} is unreadable ({detail}). weft will not start over silently: that could hand out addresses containers still use. Restore the file from a backup, or remove it with `weft reset` and restart every container on this host"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write the IPAM state to {path}: {detail}")]
    Write { path: PathBuf, detail: String },
}

/// The agent's snapshot in a redb file: one key, replaced in a
/// transaction, so a crash leaves the old state or the new, never half.
pub struct Store {
    db: redb::Database,
    path: PathBuf,
}

impl Store {
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail: e.to_string(),
        };
        let db = redb::Database::create(path).map_err(|e| corrupt(&e))?;
        Ok(Store {
            db,
            path: path.to_path_buf(),
        })
    }

    pub fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let txn = self.db.begin_read().map_err(|e| corrupt(&e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(corrupt(&e)),
        };
        let value = table.get(KEY).map_err(|e| corrupt(&e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    pub fn save(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let txn = self.db.begin_write().map_err(|e| failed(&e))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| failed(&e))?;
            table.insert(KEY, bytes).map_err(|e| failed(&e))?;
        }
        txn.commit().map_err(|e| failed(&e))
    }
}

pub type Reply = oneshot::Sender<Result<Allocation, IpamError>>;

/// The agent, its store and the callers waiting for it.
pub struct Shared {
    pub ipam: Ipam,
    store: Store,
    waiting: HashMap<OpId, Reply>,
}

impl Shared {
    /// Stores the agent's state if it changed; false if that failed (then
    /// nothing may be sent or answered).
    fn persist(&mut self) -> bool {
        if !self.ipam.dirty() {
            return true;
        }
        match self.store.save(&self.ipam.snapshot()) {
            Ok(()) => {
                self.ipam.saved();
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "IPAM state not stored: holding back messages and answers");
                false
            }
        }
    }

    /// Waits for `op`'s result.
    pub fn wait(&mut self, op: OpId, reply: Reply) {
        self.waiting.insert(op, reply);
    }

    /// Stores, then answers finished requests.
    pub fn finish(&mut self) {
        if !self.persist() {
            return;
        }
        for done in self.ipam.take_done() {
            if let Some(reply) = self.waiting.remove(&done.op) {
                let _ = reply.send(done.result);
            }
        }
    }
}

/// The agent as the router shares it: between the mesh (as a channel)
/// and the router task (for the API).
#[derive(Clone)]
pub struct IpamHandle(Arc<Mutex<Shared>>);

impl IpamHandle {
    /// Restores the agent from `store` or starts it afresh.
    pub fn open(
        config: weft_ipam::Config,
        store: Store,
        now: Instant,
    ) -> anyhow::Result<IpamHandle> {
        let ipam = match store.load()? {
            Some(bytes) => Ipam::restore(config, now, &bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", store.path.display()))?,
            None => Ipam::new(config, now)?,
        };
        let mut shared = Shared {
            ipam,
            store,
            waiting: HashMap::new(),
        };
        if !shared.persist() {
            anyhow::bail!(
                "cannot store the IPAM state in {}",
                shared.store.path.display()
            );
        }
        Ok(IpamHandle(Arc::new(Mutex::new(shared))))
    }

    pub fn lock(&self) -> MutexGuard<'_, Shared> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn channel(&self) -> Box<dyn Channel + Send> {
        Box::new(IpamChannel(self.clone()))
    }
}

/// The text `weft status ipam` prints: a summary, a row per peer, and
/// what to do about owners that cannot be reached.
pub fn status_text(status: &Status) -> String {
    let cluster = status.cluster.as_deref().unwrap_or("none yet");
    let mut out = format!(
        "range {}  default subnet {}  cluster {cluster}  blocks of {}\nstate: {}\n",
        status.range, status.default_subnet, status.block_size, status.state
    );
    if status.pending > 0 {
        out += &format!("requests waiting: {}\n", status.pending);
    }
    let total = (1u64 << (32 - status.range.prefix_len())) as f64;
    let rows: Vec<Vec<String>> = status
        .peers
        .iter()
        .map(|p| {
            let this = if p.peer == status.me { " (this)" } else { "" };
            let reach = match (p.removed, p.reachable, p.unreachable_secs) {
                (true, _, _) => "removed".to_string(),
                (_, true, _) => "reachable".to_string(),
                (_, false, Some(s)) => format!("UNREACHABLE {s}s"),
                (_, false, None) => "UNREACHABLE".to_string(),
            };
            vec![
                format!("{}{this}", p.peer),
                p.nickname.clone(),
                format!("{} ({} active)", p.blocks, p.active_blocks),
                format!("{:.1}%", p.addresses as f64 * 100.0 / total),
                p.free.to_string(),
                p.held.to_string(),
                reach,
            ]
        })
        .collect();
    out += &table(
        &[
            "PEER", "NICKNAME", "BLOCKS", "SHARE", "FREE", "HOLDS", "STATE",
        ],
        &rows,
    );
    for p in status
        .peers
        .iter()
        .filter(|p| !p.reachable && !p.removed && p.blocks > 0)
    {
        out += &format!(
            "peer {} ({}) owns {} blocks but is unreachable: if it is gone for good, run `weft rmpeer {}`\n",
            p.peer, p.nickname, p.blocks, p.peer
        );
    }
    out
}

pub fn peer(name: PeerName) -> Peer {
    Peer(name.as_u64())
}

pub fn name(peer: Peer) -> PeerName {
    PeerName::from_u64(peer.0)
}

struct IpamChannel(IpamHandle);

impl Channel for IpamChannel {
    fn on_gossip(
        &mut self,
        now: Instant,
        from: PeerName,
        payload: &[u8],
    ) -> Result<Option<Vec<u8>>, String> {
        self.0
            .lock()
            .ipam
            .on_gossip(now, peer(from), payload)
            .map_err(|e| e.to_string())
    }

    fn on_broadcast(
        &mut self,
        now: Instant,
        source: PeerName,
        payload: &[u8],
    ) -> Result<(), String> {
        self.0
            .lock()
            .ipam
            .on_broadcast(now, peer(source), payload)
            .map_err(|e| e.to_string())
    }

    fn on_unicast(&mut self, now: Instant, source: PeerName, payload: &[u8]) -> Result<(), String> {
        self.0
            .lock()
            .ipam
            .on_unicast(now, peer(source), payload)
            .map_err(|e| e.to_string())
    }

    fn full_state(&self) -> Option<Vec<u8>> {
        self.0.lock().ipam.full_state()
    }

    fn on_peers_changed(&mut self, now: Instant, reachable: &BTreeSet<PeerName>) {
        let peers = reachable.iter().map(|n| peer(*n)).collect();
        self.0.lock().ipam.on_peers_changed(now, &peers);
    }

    fn poll_outgoing(&mut self) -> Option<Outgoing> {
        let mut shared = self.0.lock();
        if !shared.persist() {
            return None;
        }
        Some(match shared.ipam.poll_outgoing()? {
            IpamOutgoing::Gossip(b) => Outgoing::Gossip(b),
            IpamOutgoing::Broadcast(b) => Outgoing::Broadcast(b),
            IpamOutgoing::Unicast(p, b) => Outgoing::Unicast(name(p), b),
        })
    }

    fn next_timeout(&self) -> Option<Instant> {
        self.0.lock().ipam.next_timeout()
    }

    fn on_timeout(&mut self, now: Instant) {
        self.0.lock().ipam.tick(now);
    }

    fn admission(&self) -> Option<Vec<u8>> {
        let (cluster, in_use) = self.0.lock().ipam.summary()?;
        let mut token = cluster.to_be_bytes().to_vec();
        token.push(u8::from(in_use));
        Some(token)
    }

    fn admit(&self, peer_name: PeerName, token: Option<&[u8]>) -> Result<(), String> {
        let theirs = token.filter(|t| t.len() == 9).map(|t| {
            (
                u64::from_be_bytes(t[..8].try_into().expect("8 bytes")),
                t[8] != 0,
            )
        });
        self.0
            .lock()
            .ipam
            .compatible(&peer_name.to_string(), theirs)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_table_marks_this_router_and_advises_on_unreachable_owners() {
        let now = Instant::now();
        let mut config = weft_ipam::Config::new(Peer(1), "10.32.0.0/12".parse().unwrap());
        config.init = weft_ipam::Init::Seed(vec![Peer(1), Peer(2)]);
        let mut ipam = Ipam::new(config, now).unwrap();
        ipam.on_peers_changed(now, &BTreeSet::new());
        let text = status_text(&ipam.status(now));
        assert!(text.contains("00:00:00:00:00:01 (this)"), "{text}");
        assert!(text.contains("50.0%"), "{text}");
        assert!(text.contains("UNREACHABLE"), "{text}");
        assert!(text.contains("weft rmpeer 00:00:00:00:00:02"), "{text}");
    }

    #[test]
    fn the_store_keeps_state_and_a_corrupt_file_is_an_error_not_a_reset() {
        let dir = std::env::temp_dir().join(format!("weft-ipam-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ipam.redb");
        let _ = std::fs::remove_file(&path);
        {
            let s = Store::open(&path).unwrap();
            assert_eq!(s.load().unwrap(), None);
            s.save(b"one").unwrap();
            s.save(b"two").unwrap();
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.load().unwrap().as_deref(), Some(&b"two"[..]));
        drop(s);
        // Scribble over the file's header.
        let mut bytes = std::fs::read(&path).unwrap();
        for b in bytes.iter_mut().take(4096) {
            *b = 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
        let err = Store::open(&path)
            .and_then(|s| s.load())
            .expect_err("a scribbled file must not load");
        let text = err.to_string();
        assert!(
            text.contains("unreadable") && text.contains("weft reset"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
