//! `weft dp show` and `weft dp flows`: the kernel datapath as people read
//! it, asked of the kernel directly (not of the router's memory), so what
//! it shows is what the kernel does.

use std::{collections::HashMap, fmt::Write};

use weft_odp::{Action, Client, Error, Flow, KeyAttr, TunnelAttr, flow::EthernetKey};

use super::{DATAPATH, monotonic_ms};
use crate::userspace::forwarding::Mac;

fn mac(m: &Mac) -> String {
    crate::netdev::attach::mac_string(*m)
}

fn tunnel(attrs: &[TunnelAttr]) -> String {
    let mut parts = Vec::new();
    for a in attrs {
        parts.push(match a {
            TunnelAttr::Id(id) => format!("id={id:#x}"),
            TunnelAttr::Ipv4Src(ip) => format!("src={ip}"),
            TunnelAttr::Ipv4Dst(ip) => format!("dst={ip}"),
            TunnelAttr::Ttl(t) => format!("ttl={t}"),
            TunnelAttr::Tos(t) => format!("tos={t}"),
            TunnelAttr::DontFragment => "df".into(),
            TunnelAttr::Csum => "csum".into(),
            other => format!("{other:?}"),
        });
    }
    format!("tunnel({})", parts.join(","))
}

fn key(attrs: &[KeyAttr], ports: &HashMap<u32, String>) -> String {
    let port = |p: &u32| ports.get(p).cloned().unwrap_or_else(|| p.to_string());
    let mut parts = Vec::new();
    for a in attrs {
        match a {
            KeyAttr::InPort(p) => parts.push(format!("in_port({})", port(p))),
            KeyAttr::Ethernet(EthernetKey { src, dst }) => {
                parts.push(format!("eth({}->{})", mac(src), mac(dst)))
            }
            KeyAttr::Tunnel(t) => parts.push(tunnel(t)),
            KeyAttr::EtherType(t) => parts.push(format!("eth_type({t:#06x})")),
            _ => {}
        }
    }
    parts.join(" ")
}

fn actions(list: &[Action], ports: &HashMap<u32, String>) -> String {
    if list.is_empty() {
        return "drop".into();
    }
    let port = |p: &u32| ports.get(p).cloned().unwrap_or_else(|| p.to_string());
    list.iter()
        .map(|a| match a {
            Action::Output(p) => format!("output({})", port(p)),
            Action::Set(KeyAttr::Tunnel(t)) => format!("set({})", tunnel(t)),
            Action::Userspace(_) => "userspace".into(),
            other => format!("{other:?}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The datapath, its ports and their counters.
pub fn datapath() -> Result<String, Error> {
    let mut client = Client::connect()?;
    let dp = client.datapath(DATAPATH)?;
    let s = dp.stats;
    let features = weft_odp::datapath::features::names(dp.user_features);
    let mut out = format!(
        "datapath {} (ifindex {}): {} hits, {} misses, {} lost, {} flows; features: {}\n",
        dp.name,
        dp.ifindex,
        s.hit,
        s.missed,
        s.lost,
        s.flows,
        if features.is_empty() {
            "none".to_string()
        } else {
            features.join(",")
        }
    );
    // A packet's lookup tries masks until one matches: more than one per
    // packet means flows of different shapes compete.
    if let Some(m) = dp.megaflow_stats {
        let per_packet = m.mask_hit as f64 / s.hit.saturating_add(s.missed).max(1) as f64;
        writeln!(
            out,
            "  masks {}: {per_packet:.2} tried per packet, {} lookups found theirs in the mask cache",
            m.masks, m.cache_hit
        )
        .expect("writing to a string");
    }
    for v in client.vports(dp.ifindex)? {
        let port = v.dst_port.map(|p| format!(", udp {p}")).unwrap_or_default();
        let st = v.stats;
        writeln!(
            out,
            "  port {:<2} {:<12} ({}{port})  rx {} packets {} bytes, tx {} packets {} bytes",
            v.port_no, v.name, v.kind, st.rx_packets, st.rx_bytes, st.tx_packets, st.tx_bytes
        )
        .expect("writing to a string");
    }
    Ok(out)
}

/// The flows, one per line.
pub fn flows() -> Result<String, Error> {
    let mut client = Client::connect()?;
    let dp = client.datapath(DATAPATH)?;
    let ports: HashMap<u32, String> = client
        .vports(dp.ifindex)?
        .into_iter()
        .map(|v| (v.port_no, v.name))
        .collect();
    let mut flows: Vec<Flow> = client.flows(dp.ifindex)?;
    flows.sort_by_key(|f| format!("{:?}", f.key));
    let now = monotonic_ms();
    let mut out = format!("{} flows in {}\n", flows.len(), DATAPATH);
    for f in flows {
        let used = f
            .used_ms
            .map(|u| format!("{:.1}s ago", now.saturating_sub(u) as f64 / 1000.0))
            .unwrap_or_else(|| "never".into());
        writeln!(
            out,
            "{}  actions: {}  packets {} bytes {} used {}",
            key(&f.key, &ports),
            actions(&f.actions, &ports),
            f.stats.packets,
            f.stats.bytes,
            used
        )
        .expect("writing to a string");
    }
    Ok(out)
}
