//! weft's own nftables table (`inet weft`): what the router writes into
//! the host's firewall, and a keeper that puts it back when anyone else
//! deletes or changes it.
//!
//! The table is compiled by [`rules`] (pure) and applied by `nft -f` in
//! one transaction; no other table is ever touched.

pub mod rules;

use std::{
    collections::BTreeSet,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{io::AsyncWriteExt as _, sync::watch};

pub use rules::{BRIDGE_FAMILY, DnsCapture, FAMILY, Ruleset, TABLE, VxlanGuard};

/// How often the keeper looks at the bridge table, whose loss or change
/// would loop the overlay's broadcasts at once: it is back within this
/// long. A look is one small `nft`; on a testbed of 50 routers on one
/// machine, looks are what the keeper costs.
const CHECK_EVERY: Duration = Duration::from_secs(2);
/// Every this many looks, the inet table is compared too: a deleted or
/// edited one is put back within ten seconds.
const FULL_CHECK_EVERY: u32 = 5;

/// What `weft status` and the report say about the table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallStatus {
    /// `inet weft and bridge weft`.
    pub table: String,
    /// Whether the table as wanted is in the kernel now.
    pub applied: bool,
    pub masquerade: bool,
    /// Destinations that keep their container source address.
    pub exempt: Vec<String>,
    /// Other mesh hosts containers reach untranslated.
    pub mesh_hosts: Vec<String>,
    /// The host's resolvers whose queries from containers the router's DNS
    /// server answers, and that server: `192.0.2.53 -> 10.32.0.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_capture: Option<String>,
    /// How often the table had to be put back after someone changed it.
    pub restored: u64,
    /// Why the table could not be written, while it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    #[test]
    fn counting_is_not_a_change_to_the_table() {
        let a = "\tcounter drop_in_0 {\n\t\tpackets 0 bytes 0\n\t}\n\tchain c {\n\t\tip saddr 10.0.0.1 counter packets 3 bytes 180 accept\n\t}";
        let b = a
            .replace("packets 0 bytes 0", "packets 7 bytes 420")
            .replace("packets 3 bytes 180", "packets 9 bytes 540");
        assert_eq!(super::without_counts(a), super::without_counts(&b));
        let c = a.replace("10.0.0.1", "10.0.0.2");
        assert_ne!(
            super::without_counts(a),
            super::without_counts(&c),
            "a rule change still shows"
        );
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    #[error(
        "nft is not installed: weft needs it for its firewall tables; install nftables (apt-get install nftables)"
    )]
    Missing,
    #[error("cannot run nft: {0}")]
    Spawn(std::io::Error),
    #[error("nft refused weft's table: {0}")]
    Refused(String),
}

fn nft() -> tokio::process::Command {
    crate::sbin::command("nft")
}

fn spawn_failed(e: std::io::Error) -> FirewallError {
    if e.kind() == std::io::ErrorKind::NotFound {
        FirewallError::Missing
    } else {
        FirewallError::Spawn(e)
    }
}

/// Runs `nft -f -` on `script`: one transaction, all or nothing.
pub async fn apply_script(script: &str) -> Result<(), FirewallError> {
    let mut child = nft()
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_failed)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(FirewallError::Spawn)?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(FirewallError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(FirewallError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// weft's table of `family` as the kernel has it now; `None` when gone.
async fn listing_of(family: &str) -> Result<Option<String>, FirewallError> {
    Ok(nft_output(&["list", "table", family, TABLE])
        .await?
        .map(|out| without_counts(&String::from_utf8_lossy(&out))))
}

/// What `nft ARGS` prints, or `None` when it fails (the table asked
/// about is gone).
pub async fn nft_output(args: &[&str]) -> Result<Option<Vec<u8>>, FirewallError> {
    let out = nft()
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .await
        .map_err(spawn_failed)?;
    Ok(out.status.success().then_some(out.stdout))
}

/// A listing with its counters' values blanked: they change with every
/// packet counted, which is not a change to the table (and putting the
/// table back would zero them).
fn without_counts(listing: &str) -> String {
    listing
        .lines()
        .map(|line| {
            let mut words: Vec<&str> = line.split_whitespace().collect();
            for i in 1..words.len() {
                if matches!(words[i - 1], "packets" | "bytes") {
                    words[i] = "-";
                }
            }
            words.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Both tables (inet, bridge) as the kernel has them now; `None` when
/// either is gone.
async fn listing() -> Result<Option<[String; 2]>, FirewallError> {
    let Some(inet) = listing_of(FAMILY).await? else {
        return Ok(None);
    };
    Ok(listing_of(BRIDGE_FAMILY)
        .await?
        .map(|bridge| [inet, bridge]))
}

/// The packets each named counter of weft's inet table has counted
/// (network policy's allows and drops).
pub async fn counters() -> Result<std::collections::BTreeMap<String, u64>, FirewallError> {
    let Some(out) = nft_output(&["-j", "list", "counters", "table", FAMILY, TABLE]).await? else {
        return Ok(Default::default());
    };
    let value: serde_json::Value = serde_json::from_slice(&out)
        .map_err(|e| FirewallError::Refused(format!("nft's JSON: {e}")))?;
    Ok(value["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let c = item.get("counter")?;
            Some((c["name"].as_str()?.to_string(), c["packets"].as_u64()?))
        })
        .collect())
}

/// How `weft status` names weft's tables.
pub fn tables() -> String {
    format!("{FAMILY} {TABLE} and {BRIDGE_FAMILY} {TABLE}")
}

/// Removes weft's tables (`weft reset`).
pub async fn remove() -> Result<(), FirewallError> {
    apply_script(&rules::removal()).await
}

/// The keeper's handle: what the router wants in the table, and what it
/// last managed.
#[derive(Clone)]
pub struct Firewall {
    desired: Arc<watch::Sender<Ruleset>>,
    status: Arc<Mutex<FirewallStatus>>,
}

impl Firewall {
    /// Writes the table and keeps it; from a tokio runtime.
    pub fn start(initial: Ruleset) -> Firewall {
        let (desired, rx) = watch::channel(initial);
        let status = Arc::new(Mutex::new(FirewallStatus::default()));
        tokio::spawn(keep(rx, status.clone()));
        Firewall {
            desired: Arc::new(desired),
            status,
        }
    }

    /// Changes what is wanted; the keeper applies it at once.
    pub fn update(&self, change: impl FnOnce(&mut Ruleset)) {
        self.desired.send_if_modified(|r| {
            let before = r.clone();
            change(r);
            *r != before
        });
    }

    pub fn status(&self) -> FirewallStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Sets hairpin on the overlay's bridge ports that exist (the fast
/// datapath's joins later than the first check; setting it again is
/// harmless).
async fn hairpin(netlink: &crate::netdev::Netlink, ports: &[String], on: bool) {
    for name in ports {
        let Ok(Some(port)) = netlink.link(name).await else {
            continue;
        };
        if port.controller.is_none() {
            continue;
        }
        if let Err(e) = netlink.set_hairpin(port.index, on).await {
            tracing::debug!(port = %name, error = %e, "cannot set hairpin");
        }
    }
}

/// Loads `modules` in one `modprobe -a` before the table that needs them
/// is written (see `weft_policy::nft::KERNEL_MODULES` for why). Failing
/// costs only time: nf_tables then loads each itself.
async fn load_modules(modules: &[&str]) {
    let started = std::time::Instant::now();
    match crate::sbin::modprobe(modules).await {
        Ok(()) => {
            tracing::debug!(?modules, elapsed = ?started.elapsed(), "kernel modules loaded")
        }
        Err(why) => {
            tracing::debug!(%why, "kernel modules not loaded ahead; nf_tables loads them as it needs them")
        }
    }
}

/// Applies the wanted table, then checks every [`CHECK_EVERY`] that the
/// kernel still has exactly what was applied; anything else (deleted,
/// flushed, edited) is replaced whole.
async fn keep(mut desired: watch::Receiver<Ruleset>, status: Arc<Mutex<FirewallStatus>>) {
    let mut applied: Option<(Ruleset, [String; 2])> = None;
    let netlink = crate::netdev::Netlink::here()
        .inspect_err(|e| tracing::error!(error = %e, "no netlink: the overlay's ports get no hairpin, node ports across hosts will not answer"))
        .ok();
    // Asked of modprobe once each, whatever it answered.
    let mut modules_asked: BTreeSet<&'static str> = BTreeSet::new();
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut looks = 0u32;
    loop {
        let wanted = desired.borrow_and_update().clone();
        let unasked: Vec<&str> = wanted
            .kernel_modules()
            .iter()
            .copied()
            .filter(|m| modules_asked.insert(m))
            .collect();
        if !unasked.is_empty() {
            load_modules(&unasked).await;
        }
        looks = looks.wrapping_add(1);
        let full = looks.is_multiple_of(FULL_CHECK_EVERY);
        let outcome = async {
            // A new wanted table is applied without listing the old one
            // first (each listing is an nft run: under emulation, the
            // better part of a second of every policy change).
            let still_wanted = applied.as_ref().is_some_and(|(r, _)| *r == wanted);
            if let Some((_, seen)) = &applied
                && still_wanted
            {
                if !full && listing_of(BRIDGE_FAMILY).await?.as_ref() == Some(&seen[1]) {
                    return Ok(false);
                }
                if listing().await?.as_ref() == Some(seen) {
                    return Ok(false);
                }
            }
            apply_script(&wanted.script()).await?;
            let seen = listing().await?.unwrap_or_default();
            applied = Some((wanted.clone(), seen));
            // The table changed under us only if what we applied is what
            // is still wanted.
            Ok::<bool, FirewallError>(still_wanted)
        }
        .await;
        // Hairpin on the overlay's ports only while the bridge table that
        // guards it is in place: unguarded, every broadcast from the
        // overlay would go straight back into it.
        if let Some(netlink) = &netlink {
            hairpin(netlink, &wanted.overlay_ports, outcome.is_ok()).await;
        }
        {
            let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
            s.table = tables();
            s.masquerade = wanted.masquerade;
            s.exempt = wanted.exempt().iter().map(|n| n.to_string()).collect();
            s.mesh_hosts = wanted.mesh_hosts.iter().map(|a| a.to_string()).collect();
            s.dns_capture = wanted.dns_capture_line();
            match outcome {
                Ok(tampered) => {
                    if tampered {
                        s.restored += 1;
                        tracing::warn!(
                            table = %s.table,
                            "weft's nftables table was deleted or changed by someone else: restored"
                        );
                    }
                    if s.error.take().is_some() || !s.applied {
                        tracing::info!(table = %s.table, "nftables table in place");
                    }
                    s.applied = true;
                }
                Err(e) => {
                    // Said once per distinct cause, not every check.
                    let message = e.to_string();
                    if s.error.as_deref() != Some(&message) {
                        tracing::error!(error = %message, "cannot write weft's nftables table");
                    }
                    s.error = Some(message);
                    s.applied = false;
                    applied = None;
                }
            }
        }
        tokio::select! {
            changed = desired.changed() => if changed.is_err() { return },
            _ = ticker.tick() => {}
        }
    }
}
