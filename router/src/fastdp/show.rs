//! `weft dp show` and `weft dp flows`: the kernel datapath as people read
//! it, asked of the kernel directly (not of the router's memory), so what
//! it shows is what the kernel does.

use std::{collections::HashMap, fmt::Write};

use weft_odp::{Action, Client, Error, Flow, KeyAttr, TunnelAttr, flow::EthernetKey, nla::Nla};

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
            TunnelAttr::TpSrc(p) => format!("tp_src={p}"),
            TunnelAttr::TpDst(p) => format!("tp_dst={p}"),
            other => format!("{other:?}"),
        });
    }
    format!("tunnel({})", parts.join(","))
}

/// Whether mask attribute `m` looks at anything: a flag by being there, a
/// value by any bit set.
fn looks_at<A: Nla>(m: &A) -> bool {
    let mut value = Vec::new();
    m.emit_value(&mut value);
    value.is_empty() || value.iter().any(|b| *b != 0)
}

/// The attributes of `key` that `mask` looks at. The kernel hands a
/// flow's key back as its first packet had it, every field filled in (an
/// arriving tunnel's UDP source port, for one, which differs per
/// connection); only the mask says what the flow matches. Without a mask
/// every field is matched.
fn matched<A: Nla + Clone>(key: &[A], mask: Option<&[A]>) -> Vec<A> {
    let Some(mask) = mask else {
        return key.to_vec();
    };
    key.iter()
        .filter(|a| mask.iter().any(|m| m.kind() == a.kind() && looks_at(m)))
        .cloned()
        .collect()
}

/// A flow's match as people read it: the fields its mask looks at, a MAC
/// it ignores as `*`.
fn key(attrs: &[KeyAttr], mask: Option<&[KeyAttr]>, ports: &HashMap<u32, String>) -> String {
    let port = |p: &u32| ports.get(p).cloned().unwrap_or_else(|| p.to_string());
    let mask_of = |kind: u16| mask.and_then(|m| m.iter().find(|a| a.kind() == kind));
    let mut parts = Vec::new();
    for a in matched(attrs, mask) {
        match (&a, mask_of(a.kind())) {
            (KeyAttr::InPort(p), _) => parts.push(format!("in_port({})", port(p))),
            (KeyAttr::Ethernet(EthernetKey { src, dst }), bits) => {
                let (src_bits, dst_bits) = match bits {
                    Some(KeyAttr::Ethernet(m)) => (m.src, m.dst),
                    _ => ([0xff; 6], [0xff; 6]),
                };
                let shown = |m: &Mac, bits: Mac| {
                    if bits == [0; 6] {
                        "*".to_string()
                    } else {
                        mac(m)
                    }
                };
                parts.push(format!(
                    "eth({}->{})",
                    shown(src, src_bits),
                    shown(dst, dst_bits)
                ))
            }
            // A tunnel mask of nothing but zeros is there all the same
            // (nested, it is never empty) and matches no tunnel field.
            (KeyAttr::Tunnel(t), Some(KeyAttr::Tunnel(bits))) => {
                let fields = matched(t, Some(bits));
                if !fields.is_empty() {
                    parts.push(tunnel(&fields))
                }
            }
            (KeyAttr::Tunnel(t), _) => parts.push(tunnel(t)),
            (KeyAttr::EtherType(t), _) => parts.push(format!("eth_type({t:#06x})")),
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
            key(&f.key, f.mask.as_deref(), &ports),
            actions(&f.actions, &ports),
            f.stats.packets,
            f.stats.bytes,
            used
        )
        .expect("writing to a string");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: Mac = [0x02, 0, 0, 0, 0, 0x0a];
    const B: Mac = [0x02, 0, 0, 0, 0, 0x0b];

    /// A flow from the vxlan port (2) as the kernel dumps it: the first
    /// packet's whole tunnel key, and the mask the router installed.
    fn arrived() -> (Vec<KeyAttr>, Vec<KeyAttr>) {
        let key = vec![
            KeyAttr::Tunnel(vec![
                TunnelAttr::Id(0x2a),
                TunnelAttr::Ipv4Src(Ipv4Addr::new(192, 0, 2, 2)),
                TunnelAttr::Ipv4Dst(Ipv4Addr::new(192, 0, 2, 1)),
                TunnelAttr::Ttl(64),
                TunnelAttr::DontFragment,
                TunnelAttr::TpSrc(51234),
                TunnelAttr::TpDst(6784),
            ]),
            KeyAttr::InPort(2),
            KeyAttr::Ethernet(EthernetKey { src: B, dst: A }),
            KeyAttr::EtherType(0x0800),
        ];
        let mask = vec![
            KeyAttr::Tunnel(vec![
                TunnelAttr::Id(u64::MAX),
                TunnelAttr::Ipv4Src(Ipv4Addr::BROADCAST),
                TunnelAttr::Ipv4Dst(Ipv4Addr::BROADCAST),
                TunnelAttr::Ttl(0),
                TunnelAttr::TpSrc(0),
            ]),
            KeyAttr::InPort(u32::MAX),
            KeyAttr::Ethernet(EthernetKey {
                src: [0xff; 6],
                dst: [0xff; 6],
            }),
            KeyAttr::EtherType(0),
        ];
        (key, mask)
    }

    fn ports() -> HashMap<u32, String> {
        HashMap::from([(2, "weft-vxlan".to_string())])
    }

    #[test]
    fn a_flow_shows_only_what_its_mask_matches() {
        let (k, m) = arrived();
        assert_eq!(
            key(&k, Some(&m), &ports()),
            "tunnel(id=0x2a,src=192.0.2.2,dst=192.0.2.1) in_port(weft-vxlan) \
             eth(02:00:00:00:00:0b->02:00:00:00:00:0a)"
        );
    }

    #[test]
    fn ignored_fields_are_starred_or_left_out_and_no_mask_means_every_field() {
        let (k, mut m) = arrived();
        m[2] = KeyAttr::Ethernet(EthernetKey {
            src: [0; 6],
            dst: [0xff; 6],
        });
        assert!(
            key(&k, Some(&m), &ports()).ends_with("eth(*->02:00:00:00:00:0a)"),
            "{}",
            key(&k, Some(&m), &ports())
        );
        m[2] = KeyAttr::Ethernet(EthernetKey::default());
        assert!(!key(&k, Some(&m), &ports()).contains("eth("));
        m[0] = KeyAttr::Tunnel(vec![
            TunnelAttr::Id(0),
            TunnelAttr::Ipv4Src(Ipv4Addr::UNSPECIFIED),
        ]);
        let untunnelled = key(&k, Some(&m), &ports());
        assert!(
            untunnelled.starts_with("in_port(weft-vxlan)"),
            "{untunnelled}"
        );
        let all = key(&k, None, &ports());
        assert!(all.contains("ttl=64,df,tp_src=51234,tp_dst=6784"), "{all}");
        assert!(all.ends_with("eth_type(0x0800)"), "{all}");
    }
}
