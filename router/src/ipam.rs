//! The router's side of IPAM: the agent's state on disk (redb), the agent
//! as the mesh's `ipam` gossip channel, and answers to the API.
//!
//! One rule makes it crash-safe: whatever the agent changed is committed
//! to disk before any message it queued leaves and before any caller
//! hears of an address. A crash can lose a request, never an answer.

use std::{
    collections::{BTreeSet, HashMap},
    net::Ipv4Addr,
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
        "the IPAM state in {path} is unreadable ({detail}). weft will not start over silently: that could hand out addresses containers still use. Move the file aside and relaunch with --recover-ipam, which rebuilds this router's holdings from the containers attached here before anything is handed out"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write the IPAM state to {path}: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error(
        "the IPAM state in {path} is missing or empty, but containers on this host use {} address(es) of the range ({}). weft will not start over: it would hand them out again. If the file was lost, relaunch with --recover-ipam to rebuild this router's holdings from them before anything is handed out",
        in_use.len(),
        in_use.iter().map(|(owner, a)| format!("{a} by {owner}")).collect::<Vec<_>>().join(", ")
    )]
    Lost {
        path: PathBuf,
        in_use: Vec<(String, Ipv4Addr)>,
    },
    #[error(
        "--recover-ipam: the IPAM state in {0} is there and readable; there is nothing to recover (launch without the flag)"
    )]
    NothingToRecover(PathBuf),
}

/// Runs `f`, turning a panic into an error: redb asserts on some damaged
/// files instead of returning an error, and a damaged file must be a
/// clear refusal, not a backtrace. The panic message is not printed.
fn without_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // One hook for the whole process, installed once, that stays quiet on
    // the thread inside here: swapping hooks would race with other
    // threads' panics (and lose their messages).
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    thread_local! {
        static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the file is damaged".into())
    })
}

/// The agent's snapshot in a redb file: one key, replaced in a
/// transaction, so a crash leaves the old state or the new, never half.
pub struct Store {
    /// `None` between a failed write and a successful reopening.
    db: Option<redb::Database>,
    path: PathBuf,
}

impl Store {
    /// Opens the file (making it if missing) and reads the snapshot in it.
    pub fn open(path: &Path) -> Result<(Store, Option<Vec<u8>>), StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let opened = without_panics(|| {
            let db = redb::Database::create(path).map_err(|e| e.to_string())?;
            let store = Store {
                db: Some(db),
                path: path.to_path_buf(),
            };
            let snapshot = store.load().map_err(|e| e.to_string())?;
            Ok::<_, String>((store, snapshot))
        });
        opened.map_err(corrupt)?.map_err(corrupt)
    }

    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| corrupt(&"the file is not open"))?;
        let txn = db.begin_read().map_err(|e| corrupt(&e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(corrupt(&e)),
        };
        let value = table.get(KEY).map_err(|e| corrupt(&e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Replaces the snapshot in one transaction. After an I/O error redb
    /// refuses every later write until the file is opened again (a full
    /// disk would stop IPAM for good), so a failed write reopens the file
    /// and tries once more.
    pub fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let first = match self.write(bytes) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Closed first: redb locks the file while it is open.
        self.db = None;
        self.db = without_panics(|| redb::Database::create(&self.path))
            .ok()
            .and_then(Result::ok);
        match self.db {
            Some(_) => self.write(bytes),
            None => Err(first),
        }
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| failed(&"the file could not be opened again"))?;
        let txn = db.begin_write().map_err(|e| failed(&e))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| failed(&e))?;
            table.insert(KEY, bytes).map_err(|e| failed(&e))?;
        }
        txn.commit().map_err(|e| failed(&e))
    }
}

/// Requests for IPAM; answered once the agent's state is on disk.
#[derive(Debug)]
pub enum IpamRequest {
    /// An address for container `id` (this one, if `address` is given).
    Allocate {
        id: String,
        subnet: Option<ipnet::Ipv4Net>,
        address: Option<std::net::Ipv4Addr>,
        reply: Reply,
    },
    Release {
        id: String,
        address: Option<std::net::Ipv4Addr>,
        reply: oneshot::Sender<Vec<std::net::Ipv4Addr>>,
    },
    Status(oneshot::Sender<weft_ipam::Status>),
    RemovePeer {
        peer: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Forgets the ring and the holdings; refused while any address is
    /// held here, unless `forget_unattached` (the host's containers were
    /// detached first, and what is left was allocated by hand).
    Reset {
        forget_unattached: bool,
        reply: oneshot::Sender<Result<String, String>>,
    },
}

pub type Reply = oneshot::Sender<Result<Allocation, IpamError>>;

/// The agent, its store and the callers waiting for it.
pub struct Shared {
    pub ipam: Ipam,
    store: Store,
    waiting: HashMap<OpId, Reply>,
    /// Why the last store failed, while it fails.
    failing: Option<String>,
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
                if self.failing.take().is_some() {
                    tracing::info!("IPAM state stored again");
                }
                true
            }
            Err(e) => {
                // Said once per distinct cause: this is tried at every turn.
                let text = e.to_string();
                if self.failing.as_deref() != Some(&text) {
                    tracing::error!(error = %text, "IPAM state not stored: holding back messages, refusing answers");
                }
                self.failing = Some(text);
                false
            }
        }
    }

    /// Waits for `op`'s result.
    pub fn wait(&mut self, op: OpId, reply: Reply) {
        self.waiting.insert(op, reply);
    }

    /// Stores, then answers finished requests; if the state cannot be
    /// stored, they are answered with that error instead: an address not
    /// on disk must not be used (the holding stays in memory, and is
    /// stored, or settled at the next start, later).
    pub fn finish(&mut self) {
        let stored = self.persist();
        for done in self.ipam.take_done() {
            if let Some(reply) = self.waiting.remove(&done.op) {
                let result = match (&self.failing, stored) {
                    (Some(why), false) => Err(IpamError::NotStored(why.clone())),
                    _ => done.result,
                };
                let _ = reply.send(result);
            }
        }
    }
}

/// Owners whose holdings exist only for an interface on this host: a
/// holding of theirs without one is left from an attach or detach that did
/// not finish. (Docker's are not: it asks for an address before the
/// endpoint exists. Hand-made `weft ipam allocate` holdings are not either.)
const ATTACHED_OWNERS: [&str; 3] = ["attach:", "cni:", crate::netdev::gateway::OWNER];

/// An interface whose address IPAM says another owner holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conflict {
    pub owner: String,
    pub addr: Ipv4Addr,
    pub holder: String,
}

/// What settling changes: holdings to drop, addresses to adopt.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Settlement {
    pub release: Vec<(String, Ipv4Addr)>,
    pub adopt: Vec<(String, Ipv4Addr)>,
}

/// Compares IPAM's holdings with what the host's interfaces use: a holding
/// of an attached owner with no interface is released, an interface's
/// address that its owner does not hold is adopted. Pure.
pub fn settlement(
    holdings: &std::collections::BTreeMap<String, BTreeSet<u32>>,
    in_use: &[(String, Ipv4Addr)],
) -> Settlement {
    let used: BTreeSet<(&str, u32)> = in_use
        .iter()
        .map(|(o, a)| (o.as_str(), u32::from(*a)))
        .collect();
    let mut out = Settlement::default();
    for (owner, held) in holdings {
        if !ATTACHED_OWNERS.iter().any(|p| owner.starts_with(p)) {
            continue;
        }
        for a in held {
            if !used.contains(&(owner.as_str(), *a)) {
                out.release.push((owner.clone(), Ipv4Addr::from(*a)));
            }
        }
    }
    for (owner, addr) in in_use {
        let held = holdings
            .get(owner)
            .is_some_and(|h| h.contains(&u32::from(*addr)));
        if !held {
            out.adopt.push((owner.clone(), *addr));
        }
    }
    out
}

impl Shared {
    /// Answers a request of the API.
    pub fn answer(&mut self, now: Instant, request: IpamRequest) {
        match request {
            IpamRequest::Allocate {
                id,
                subnet,
                address,
                reply,
            } => {
                let op = match address {
                    Some(a) => self.ipam.claim(now, &id, a, subnet),
                    None => self.ipam.allocate(now, &id, subnet),
                };
                self.wait(op, reply);
                self.finish();
            }
            IpamRequest::Release { id, address, reply } => {
                let released = self.ipam.release(now, &id, address);
                self.finish();
                let _ = reply.send(released);
            }
            IpamRequest::Status(reply) => {
                let _ = reply.send(self.ipam.status(now));
            }
            IpamRequest::RemovePeer { peer, reply } => {
                let status = self.ipam.status(now);
                let found = status
                    .peers
                    .iter()
                    .find(|p| p.peer.to_string() == peer || p.nickname == peer)
                    .map(|p| p.peer)
                    .or_else(|| peer.parse().ok());
                let result = match found {
                    None => Err(format!(
                        "no peer named {peer:?} owns space; `weft status ipam` lists them"
                    )),
                    Some(p) => self
                        .ipam
                        .remove_peer(now, p)
                        .map(|blocks| {
                            format!(
                                "took over {blocks} blocks of {p}; its addresses are free again\n"
                            )
                        })
                        .map_err(|e| e.to_string()),
                };
                self.finish();
                let _ = reply.send(result);
            }
            IpamRequest::Reset {
                forget_unattached,
                reply,
            } => {
                let held: Vec<String> = self
                    .ipam
                    .handles()
                    .iter()
                    .map(|(owner, h)| format!("{owner} ({})", h.len()))
                    .collect();
                let result = if !held.is_empty() && !forget_unattached {
                    Err(format!(
                        "addresses are held on this host: {}. Resetting would forget them and IPAM could hand them out again. `weft ipam reset --detach` takes this host's containers off the network and gives up its gateway first (and forgets addresses allocated by hand)",
                        held.join(", ")
                    ))
                } else {
                    self.ipam.reset(now);
                    Ok("IPAM reset: this router will join the IPAM cluster of the mesh it connects to\n".to_string())
                };
                self.finish();
                let _ = reply.send(result);
            }
        }
    }

    /// Applies [`settlement`]; returns the adoptions refused because
    /// another owner holds the address.
    fn settle(&mut self, now: Instant, in_use: &[(String, Ipv4Addr)]) -> Vec<Conflict> {
        let plan = settlement(self.ipam.handles(), in_use);
        for (owner, addr) in &plan.release {
            tracing::warn!(%owner, %addr, "released an address held for an interface that is gone (an attach or detach did not finish)");
            self.ipam.release(now, owner, Some(*addr));
        }
        let mut conflicts = Vec::new();
        for (owner, addr) in plan.adopt {
            match self.ipam.adopt(&owner, addr) {
                Ok(()) => {}
                Err(IpamError::AddressInUse { holder, .. }) => conflicts.push(Conflict {
                    owner,
                    addr,
                    holder,
                }),
                Err(e) => {
                    tracing::warn!(%owner, %addr, error = %e, "cannot adopt an address in use here")
                }
            }
        }
        conflicts
    }
}

/// The agent as the router shares it: between the mesh (as a channel)
/// and the router task (for the API).
#[derive(Clone)]
pub struct IpamHandle(Arc<Mutex<Shared>>);

impl IpamHandle {
    /// Restores the agent from `store`, or starts it afresh when nothing
    /// on this host uses an address; then settles the holdings with what
    /// the host's containers use (`in_use`: owner and address). A missing
    /// state while addresses are in use is refused unless `recover`, which
    /// rebuilds the holdings from `in_use`. Returns the interfaces whose
    /// address turned out to be someone else's: they must go.
    pub fn open(
        config: weft_ipam::Config,
        (store, snapshot): (Store, Option<Vec<u8>>),
        now: Instant,
        in_use: &[(String, Ipv4Addr)],
        recover: bool,
    ) -> anyhow::Result<(IpamHandle, Vec<Conflict>)> {
        let in_range: Vec<(String, Ipv4Addr)> = in_use
            .iter()
            .filter(|(_, a)| config.range.contains(a))
            .cloned()
            .collect();
        let ipam = match (snapshot, recover) {
            (Some(_), true) => return Err(StoreError::NothingToRecover(store.path.clone()).into()),
            (Some(bytes), false) => Ipam::restore(config, now, &bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", store.path.display()))?,
            (None, false) if !in_range.is_empty() => {
                return Err(StoreError::Lost {
                    path: store.path.clone(),
                    in_use: in_range,
                }
                .into());
            }
            (None, _) => Ipam::new(config, now)?,
        };
        let mut shared = Shared {
            ipam,
            store,
            waiting: HashMap::new(),
            failing: None,
        };
        let conflicts = shared.settle(now, &in_range);
        if !shared.persist() {
            anyhow::bail!(
                "cannot store the IPAM state in {}",
                shared.store.path.display()
            );
        }
        Ok((IpamHandle(Arc::new(Mutex::new(shared))), conflicts))
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
    fn the_store_keeps_state_and_a_damaged_file_is_an_error_not_a_reset() {
        let dir = std::env::temp_dir().join(format!("weft-ipam-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ipam.redb");
        let _ = std::fs::remove_file(&path);
        {
            let (mut s, snapshot) = Store::open(&path).unwrap();
            assert_eq!(snapshot, None);
            s.save(b"one").unwrap();
            s.save(b"two").unwrap();
        }
        let (s, snapshot) = Store::open(&path).unwrap();
        assert_eq!(snapshot.as_deref(), Some(&b"two"[..]));
        drop(s);
        let good = std::fs::read(&path).unwrap();
        // Scribbled over the header; cut short (redb asserts on that one,
        // which must still be a refusal and not a panic).
        let mut scribbled = good.clone();
        for b in scribbled.iter_mut().take(4096) {
            *b = 0x5a;
        }
        let cut = good[..good.len().min(100_000) / 2].to_vec();
        for damaged in [scribbled, cut] {
            std::fs::write(&path, damaged).unwrap();
            let text = Store::open(&path)
                .err()
                .expect("a damaged file must not load")
                .to_string();
            assert!(
                text.contains("unreadable") && text.contains("--recover-ipam"),
                "{text}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn held(pairs: &[(&str, u32)]) -> std::collections::BTreeMap<String, BTreeSet<u32>> {
        let mut out = std::collections::BTreeMap::<String, BTreeSet<u32>>::new();
        for (owner, a) in pairs {
            out.entry(owner.to_string()).or_default().insert(*a);
        }
        out
    }

    #[test]
    fn settling_releases_what_no_interface_uses_and_adopts_what_one_does() {
        let a = |n: u32| Ipv4Addr::from(0x0a20_0000 + n);
        let holdings = held(&[
            ("attach:web", 0x0a20_0001),
            ("attach:gone", 0x0a20_0002),
            ("cni:net:c1:eth0", 0x0a20_0003),
            ("weft:expose", 0x0a20_0004),
            // Not tied to an interface here: kept whatever.
            ("docker:02:42:0a:00:00:05", 0x0a20_0005),
            ("by-hand", 0x0a20_0006),
        ]);
        let in_use = vec![
            ("attach:web".to_string(), a(1)),
            ("weft:expose".to_string(), a(4)),
            ("attach:db".to_string(), a(9)),
        ];
        let plan = settlement(&holdings, &in_use);
        assert_eq!(
            plan.release,
            vec![
                ("attach:gone".to_string(), a(2)),
                ("cni:net:c1:eth0".to_string(), a(3)),
            ]
        );
        assert_eq!(plan.adopt, vec![("attach:db".to_string(), a(9))]);
        assert_eq!(settlement(&holdings, &[]).adopt, vec![]);
    }
}
