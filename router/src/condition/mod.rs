//! Network conditioning on the router: which containers are conditioned
//! and how (`conditions.json` in the data directory, so conditions
//! survive a restart), and how each is conditioned: by the kernel's
//! token buckets when a shaped rate is all it asks ([`kernel`]), else by
//! a conditioned port ([`port`]). What the conditions mean and the
//! per-packet decisions are `weft-condition`'s.

pub mod doors;
pub mod kernel;
pub mod port;

use std::{collections::BTreeMap, path::PathBuf};

use weft_condition::{Conditions, ConfigError};

use self::port::{Port, PortCounters};
use crate::netdev::{HostNetwork, NetlinkError, attach::Attachment};

#[derive(Debug, thiserror::Error)]
pub enum ConditionError {
    #[error("{0} is not attached here; `weft ps` lists what is")]
    NotAttached(String),
    #[error("refused, the running conditions stay: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot put {id} through the conditioner: {cause}")]
    Plumbing { id: String, cause: String },
    #[error("cannot store the conditions in {path}: {cause}; is the data directory writable?")]
    Store {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not valid ({cause}); fix it or remove it to start without conditions")]
    Corrupt { path: PathBuf, cause: String },
}

/// conditions.json: each conditioned container's id and its conditions
/// (weft's JSON form), pinned by `formats.rs`.
pub(crate) fn encode_store(stored: &BTreeMap<String, Conditions>) -> Vec<u8> {
    serde_json::to_vec_pretty(stored).expect("conditions serialise")
}

/// Reads conditions.json; every container's conditions must be valid.
pub(crate) fn decode_store(bytes: &[u8]) -> Result<BTreeMap<String, Conditions>, String> {
    let stored: BTreeMap<String, Conditions> =
        serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    for (id, c) in &stored {
        c.validate().map_err(|e| format!("{id}: {e}"))?;
    }
    Ok(stored)
}

/// Reads one of conditioning's state files (absent: empty); one that
/// does not decode is refused, naming the file.
fn read_state<T: Default>(
    file: &std::path::Path,
    decode: fn(&[u8]) -> Result<T, String>,
) -> Result<T, ConditionError> {
    match std::fs::read(file) {
        Ok(bytes) => decode(&bytes).map_err(|cause| ConditionError::Corrupt {
            path: file.to_path_buf(),
            cause,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(cause) => Err(ConditionError::Store {
            path: file.to_path_buf(),
            cause,
        }),
    }
}

/// Writes one of conditioning's state files, all or nothing.
fn write_state(file: &std::path::Path, bytes: &[u8]) -> Result<(), ConditionError> {
    crate::state_file::replace(file, bytes).map_err(|cause| ConditionError::Store {
        path: file.to_path_buf(),
        cause,
    })
}

/// The TAP that stands in for a conditioned container's veth on the
/// bridge: the veth's name with `vwefc` for `vweft`, so each container
/// has its own and it reads as weft's.
pub fn tap_name(veth: &str) -> String {
    match veth.strip_prefix(crate::netdev::attach::HOST_PREFIX) {
        Some(rest) => format!("vwefc{rest}"),
        None => format!("vwefc{}", &veth[veth.len().saturating_sub(10)..]),
    }
}

/// Every conditioned container of this host.
pub struct Conditioning {
    file: PathBuf,
    inner: tokio::sync::Mutex<Inner>,
    /// Containers with Synthetic Network's API on a port of their own.
    pub doors: doors::Doors,
}

#[derive(Default)]
struct Inner {
    stored: BTreeMap<String, Conditions>,
    ports: BTreeMap<String, Port>,
    /// Containers the kernel shapes.
    kernel: std::collections::BTreeSet<String>,
}

impl Inner {
    /// What conditions container `id`: `kernel` or `conditioner`.
    fn by(&self, id: &str) -> &'static str {
        if self.kernel.contains(id) {
            "kernel"
        } else {
            "conditioner"
        }
    }
}

/// One conditioned container, for status and the API.
#[derive(Debug, serde::Serialize)]
pub struct Conditioned {
    pub id: String,
    pub conditions: Conditions,
    /// `kernel` (token buckets, no counters here) or `conditioner`.
    pub by: &'static str,
    pub counters: Option<PortCounters>,
}

impl Conditioning {
    /// Reads `file` (absent: no conditions). Ports start in [`restore`].
    ///
    /// [`restore`]: Conditioning::restore
    pub fn load(file: PathBuf) -> Result<Conditioning, ConditionError> {
        let stored = read_state(&file, decode_store)?;
        Ok(Conditioning {
            doors: doors::Doors::load(file.with_file_name(doors::FILE))?,
            file,
            inner: tokio::sync::Mutex::new(Inner {
                stored,
                ..Inner::default()
            }),
        })
    }

    fn save(&self, stored: &BTreeMap<String, Conditions>) -> Result<(), ConditionError> {
        write_state(&self.file, &encode_store(stored))
    }

    /// What `id` suffers now (a clean link when nothing).
    pub async fn get(&self, id: &str) -> Conditions {
        self.inner
            .lock()
            .await
            .stored
            .get(id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many containers each of the kernel and the conditioner
    /// conditions (for status; no port is asked anything).
    pub async fn by(&self) -> BTreeMap<String, usize> {
        let inner = self.inner.lock().await;
        let mut by = BTreeMap::new();
        for id in inner.stored.keys() {
            *by.entry(inner.by(id).to_string()).or_default() += 1;
        }
        by
    }

    /// Every conditioned container's conditions and what conditions it
    /// (`kernel` or `conditioner`), asking no port anything.
    pub async fn stored(&self) -> BTreeMap<String, (Conditions, &'static str)> {
        let inner = self.inner.lock().await;
        inner
            .stored
            .iter()
            .map(|(id, c)| (id.clone(), (c.clone(), inner.by(id))))
            .collect()
    }

    /// Every conditioned container, with its counters.
    pub async fn list(&self) -> Vec<Conditioned> {
        let inner = self.inner.lock().await;
        inner
            .stored
            .iter()
            .map(|(id, c)| Conditioned {
                id: id.clone(),
                conditions: c.clone(),
                by: inner.by(id),
                counters: inner.ports.get(id).and_then(Port::counters),
            })
            .collect()
    }

    /// Puts `conditions` on attachment `a`, all or nothing: on any failure
    /// the container keeps what it had. Clean conditions take it out of
    /// the conditioner and the kernel's shapers.
    pub async fn set(
        &self,
        network: &HostNetwork,
        a: &Attachment,
        conditions: Conditions,
    ) -> Result<(), ConditionError> {
        conditions.validate()?;
        let mut inner = self.inner.lock().await;
        let before = inner.stored.get(&a.id).cloned().unwrap_or_default();
        if before == conditions && conditions.is_clean() {
            // Nothing was conditioned: nothing to store.
            return Ok(());
        }
        let mut stored = inner.stored.clone();
        if conditions.is_clean() {
            stored.remove(&a.id);
        } else {
            stored.insert(a.id.clone(), conditions.clone());
        }
        self.save(&stored)?;
        if let Err(e) = plumb(network, &mut inner, a, &conditions).await {
            if let Err(again) = plumb(network, &mut inner, a, &before).await {
                tracing::warn!(container = %a.id, error = %again, "cannot put its old conditions back either");
            }
            self.save(&inner.stored)?;
            return Err(e);
        }
        inner.stored = stored;
        Ok(())
    }

    /// Conditions the stored containers that are attached again (ports
    /// and the kernel's shapers); forgets the others.
    pub async fn restore(&self, network: &HostNetwork) {
        let attachments = network.registry.lock().await.list();
        let ids: Vec<String> = attachments.iter().map(|a| a.id.clone()).collect();
        self.retain(&ids).await;
        let mut inner = self.inner.lock().await;
        for a in &attachments {
            let Some(conditions) = inner.stored.get(&a.id).cloned() else {
                continue;
            };
            if let Err(e) = plumb(network, &mut inner, a, &conditions).await {
                tracing::warn!(container = %a.id, error = %e, "cannot restore its conditions")
            }
        }
    }

    /// A container left: its port and conditions go.
    pub async fn forget(&self, id: &str) {
        self.keep(|other| other != id).await
    }

    /// Only the containers `attached` keep their conditions (however the
    /// others left: detach, a runtime, a deleted namespace).
    pub async fn retain(&self, attached: &[String]) {
        self.keep(|id| attached.iter().any(|a| a == id)).await
    }

    async fn keep(&self, keep: impl Fn(&str) -> bool) {
        if let Err(e) = self.doors.keep(&keep) {
            tracing::warn!(error = %e, "cannot store the Synthetic Network doors");
        }
        let mut inner = self.inner.lock().await;
        let gone: Vec<String> = inner
            .stored
            .keys()
            .filter(|id| !keep(id))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        for id in &gone {
            tracing::info!(container = %id, "its container is gone: its conditions leave");
            inner.ports.remove(id);
            inner.kernel.remove(id);
            inner.stored.remove(id);
        }
        if let Err(e) = self.save(&inner.stored) {
            tracing::warn!(error = %e, "cannot store the conditions");
        }
    }
}

/// Makes the devices match `conditions`: a port where the conditioner is
/// needed, the kernel's token buckets where they do it all, neither for
/// clean conditions; moving from one to the other takes the old one away.
async fn plumb(
    network: &HostNetwork,
    inner: &mut Inner,
    a: &Attachment,
    conditions: &Conditions,
) -> Result<(), ConditionError> {
    let shaping = conditions.kernel_shaping();
    let by_port = !conditions.is_clean() && shaping.is_none();
    let plumbing = |cause: String| ConditionError::Plumbing {
        id: a.id.clone(),
        cause,
    };
    if inner.kernel.contains(&a.id) && shaping.is_none() {
        // Off the kernel's buckets without losing what they queue.
        kernel::drain(a)
            .await
            .map_err(|e| plumbing(e.to_string()))?;
    }
    match (inner.ports.contains_key(&a.id), by_port) {
        (true, true) => inner.ports[&a.id].set(conditions.clone()),
        (true, false) => {
            // What the port holds leaves on time first: a change loses
            // nothing already queued.
            let port = &inner.ports[&a.id];
            port.set(Conditions::default());
            drain(&a.id, port).await;
            back_on_bridge(network, a)
                .await
                .map_err(|e| plumbing(e.to_string()))?;
            inner.ports.remove(&a.id);
        }
        (false, true) => {
            let port = start_port(network, a, conditions.clone()).await?;
            inner.ports.insert(a.id.clone(), port);
        }
        (false, false) => {}
    }
    if shaping.is_some() || inner.kernel.contains(&a.id) {
        kernel::apply(a, shaping.unwrap_or_default())
            .await
            .map_err(|e| plumbing(e.to_string()))?;
    }
    if shaping.is_some() {
        inner.kernel.insert(a.id.clone());
    } else {
        inner.kernel.remove(&a.id);
    }
    Ok(())
}

/// How long a port leaving is given to send what it holds: a change
/// waits for it (so the change loses nothing queued), but not for a
/// minute of latency.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Waits until `port` holds nothing (it has clean conditions, so it takes
/// on nothing new), or [`DRAIN_LIMIT`].
async fn drain(id: &str, port: &Port) {
    let started = std::time::Instant::now();
    loop {
        let held = port.counters().map_or(0, |c| c.held);
        if held == 0 {
            return;
        }
        if started.elapsed() >= DRAIN_LIMIT {
            tracing::warn!(container = %id, held, "its conditioner still held packets after {DRAIN_LIMIT:?}: they are dropped");
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// The TAP on the bridge, the veth off it, the thread between them; on
/// failure, everything as before.
async fn start_port(
    network: &HostNetwork,
    a: &Attachment,
    conditions: Conditions,
) -> Result<Port, ConditionError> {
    let fail = |cause: String| ConditionError::Plumbing {
        id: a.id.clone(),
        cause,
    };
    let veth = network
        .netlink
        .require(&a.interface)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let port = Port::start(&tap_name(&a.interface), veth.index, conditions)
        .map_err(|e| fail(format!("cannot open its TAP and socket: {e}")))?;
    let plugged = async {
        let tap = network.netlink.require(&port.tap).await?;
        network.netlink.set_mtu_up(tap.index, veth.mtu).await?;
        network.netlink.attach(tap.index, network.bridge).await?;
        network.netlink.release(veth.index).await
    };
    if let Err(e) = plugged.await {
        undo_port(network, a, port).await;
        return Err(fail(e.to_string()));
    }
    Ok(port)
}

/// The container's veth back on the bridge.
async fn back_on_bridge(network: &HostNetwork, a: &Attachment) -> Result<(), NetlinkError> {
    let veth = network.netlink.require(&a.interface).await?;
    network.netlink.attach(veth.index, network.bridge).await
}

/// The veth back on the bridge, the TAP closed (which removes it).
async fn undo_port(network: &HostNetwork, a: &Attachment, port: Port) {
    if let Err(e) = back_on_bridge(network, a).await {
        tracing::warn!(container = %a.id, error = %e, "cannot put the container back on the bridge");
    }
    drop(port);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_are_named_after_their_veths_and_read_as_weft_devices() {
        assert_eq!(tap_name("vweft0a1b2c3d"), "vwefc0a1b2c3d");
        assert!(crate::netdev::is_weft_device(&tap_name("vweft0a1b2c3d")));
        assert!(tap_name("eth-very-long-name").len() < libc::IFNAMSIZ);
    }

    #[test]
    fn a_stored_file_that_is_not_valid_is_an_error_not_a_reset() {
        let dir = std::env::temp_dir().join(format!("weft-cond-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("conditions.json");
        std::fs::write(
            &file,
            br#"{"c1": {"default_link": {"egress": {"loss": 3}}}}"#,
        )
        .unwrap();
        let e = Conditioning::load(file.clone()).err().expect("refused");
        assert!(e.to_string().contains("default_link.egress.loss"), "{e}");
        std::fs::write(
            &file,
            br#"{"c1": {"default_link": {"egress": {"latency": 20}}}}"#,
        )
        .unwrap();
        let c = Conditioning::load(file).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(rt.block_on(c.get("c1")).default_link.egress.latency, 20.0);
        assert!(rt.block_on(c.get("c2")).is_clean());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
