//! Flow top's arithmetic, with no I/O: counts read at two moments become
//! per-flow rates, each flow is put with the local container it belongs
//! to and, within that container, with the conditioning rule it matches
//! (the first that matches, as the conditioner picks), so a user sees
//! what to condition.

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    time::Instant,
};

use serde::{Deserialize, Serialize};
use weft_condition::{Conditions, Direction, FlowKey};

use super::table::Sample;

/// Rows kept per rule; the rest are summed into the rule's totals and
/// counted in `omitted`, so a container with a port scan in it still
/// answers in one screen.
pub const MAX_ROWS: usize = 100;

/// The rule name of traffic no flow rule matches.
pub const DEFAULT_RULE: &str = "default";

/// A local container as flow top needs it.
#[derive(Debug, Clone)]
pub struct Local {
    pub id: String,
    pub addresses: Vec<IpAddr>,
    /// Its conditions (none: every flow is the default's).
    pub conditions: Conditions,
}

/// Counts and rates in one direction, seen from the container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    /// Over the last interval; 0 on the first reading.
    pub bits_per_second: f64,
    pub packets_per_second: f64,
}

impl Traffic {
    fn add(&mut self, other: &Traffic) {
        self.packets += other.packets;
        self.bytes += other.bytes;
        self.bits_per_second += other.bits_per_second;
        self.packets_per_second += other.packets_per_second;
    }
}

/// One conversation of a container: both directions together.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Flow {
    pub remote: IpAddr,
    pub protocol: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    /// Into the container.
    pub inbound: Traffic,
    /// Out of it.
    pub outbound: Traffic,
}

impl Flow {
    fn rate(&self) -> f64 {
        self.inbound.bits_per_second + self.outbound.bits_per_second
    }
}

/// A container's flows that one rule (or the default) takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleFlows {
    /// The flow rule's label, or `default`.
    pub rule: String,
    pub inbound: Traffic,
    pub outbound: Traffic,
    /// Busiest first.
    pub flows: Vec<Flow>,
    /// Flows left out of `flows` (counted in the totals).
    #[serde(default)]
    pub omitted: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerFlows {
    pub id: String,
    pub addresses: Vec<IpAddr>,
    pub conditioned: bool,
    /// In the order the rules are matched, the default last.
    pub rules: Vec<RuleFlows>,
}

/// What `/flows` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowsReport {
    /// Whether flows are being counted (someone asked to watch).
    #[serde(default)]
    pub counting: bool,
    /// What the rates are over; none on the first reading, which only
    /// starts counting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// A set was full: flows beyond it are not counted.
    #[serde(default)]
    pub table_full: bool,
    pub containers: Vec<ContainerFlows>,
}

type Key = (IpAddr, IpAddr, u8, Option<(u16, u16)>);
/// A reading's counts (packets, bytes) per element.
type Counts = HashMap<Key, (u64, u64)>;
/// A conversation of one container: remote, protocol, local and remote
/// port.
type Conversation = (IpAddr, u8, Option<u16>, Option<u16>);

/// The last reading, to take the next one's rates against.
#[derive(Debug, Default)]
pub struct Top {
    last: Option<(Instant, Counts)>,
}

impl Top {
    /// Forgets the last reading (counting stopped; the next starts over).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// Turns one reading into the report.
    pub fn observe(
        &mut self,
        now: Instant,
        samples: &[Sample],
        table_full: bool,
        locals: &[Local],
    ) -> FlowsReport {
        let previous = self.last.take();
        let interval = previous
            .as_ref()
            .map(|(at, _)| now.saturating_duration_since(*at))
            .filter(|d| !d.is_zero());
        let traffic = |s: &Sample| -> Traffic {
            let mut t = Traffic {
                packets: s.packets,
                bytes: s.bytes,
                ..Traffic::default()
            };
            if let (Some(dt), Some((_, before))) = (interval, &previous) {
                // A flow new since the last reading (or one that left the
                // set and came back, its counter restarted) counts from 0.
                let (p0, b0) = before
                    .get(&s.key())
                    .copied()
                    .filter(|(p, b)| *p <= s.packets && *b <= s.bytes)
                    .unwrap_or((0, 0));
                let secs = dt.as_secs_f64();
                t.bits_per_second = (s.bytes - b0) as f64 * 8.0 / secs;
                t.packets_per_second = (s.packets - p0) as f64 / secs;
            }
            t
        };
        let owner: HashMap<IpAddr, usize> = locals
            .iter()
            .enumerate()
            .flat_map(|(i, l)| l.addresses.iter().map(move |a| (*a, i)))
            .collect();
        // Per container, per conversation (remote, protocol, local port,
        // remote port): both directions.
        let mut conversations: Vec<BTreeMap<Conversation, Flow>> =
            vec![BTreeMap::new(); locals.len()];
        for s in samples {
            let t = traffic(s);
            let ends = [
                (s.source, s.destination, Direction::Egress),
                (s.destination, s.source, Direction::Ingress),
            ];
            for (local, remote, dir) in ends {
                let Some(&i) = owner.get(&local) else {
                    continue;
                };
                let (local_port, remote_port) = match (s.ports, dir) {
                    (Some((sp, dp)), Direction::Egress) => (Some(sp), Some(dp)),
                    (Some((sp, dp)), Direction::Ingress) => (Some(dp), Some(sp)),
                    (None, _) => (None, None),
                };
                let flow = conversations[i]
                    .entry((remote, s.protocol, local_port, remote_port))
                    .or_insert_with(|| Flow {
                        remote,
                        protocol: s.protocol,
                        local_port,
                        remote_port,
                        inbound: Traffic::default(),
                        outbound: Traffic::default(),
                    });
                match dir {
                    Direction::Ingress => flow.inbound.add(&t),
                    Direction::Egress => flow.outbound.add(&t),
                }
            }
        }
        let containers = locals
            .iter()
            .zip(conversations)
            .map(|(local, flows)| group(local, flows.into_values()))
            .collect();
        self.last = Some((
            now,
            samples
                .iter()
                .map(|s| (s.key(), (s.packets, s.bytes)))
                .collect(),
        ));
        FlowsReport {
            counting: true,
            interval_ms: interval.map(|d| d.as_millis() as u64),
            table_full,
            containers,
        }
    }
}

/// A container's conversations under the rules that take them.
fn group(local: &Local, flows: impl Iterator<Item = Flow>) -> ContainerFlows {
    let rules = &local.conditions.flows;
    let mut groups: Vec<RuleFlows> = rules
        .iter()
        .map(|r| r.label.as_str())
        .chain([DEFAULT_RULE])
        .map(|rule| RuleFlows {
            rule: rule.to_string(),
            inbound: Traffic::default(),
            outbound: Traffic::default(),
            flows: Vec::new(),
            omitted: 0,
        })
        .collect();
    for flow in flows {
        // Seen from the container, as the conditioner keys a packet.
        let key = FlowKey {
            remote: flow.remote,
            protocol: flow.protocol,
            port: flow.remote_port,
        };
        let at = local.conditions.classify(Some(&key)).unwrap_or(rules.len());
        let g = &mut groups[at];
        g.inbound.add(&flow.inbound);
        g.outbound.add(&flow.outbound);
        g.flows.push(flow);
    }
    for g in &mut groups {
        g.flows.sort_by(|a, b| {
            b.rate().total_cmp(&a.rate()).then(
                (b.inbound.bytes + b.outbound.bytes).cmp(&(a.inbound.bytes + a.outbound.bytes)),
            )
        });
        g.omitted = g.flows.len().saturating_sub(MAX_ROWS);
        g.flows.truncate(MAX_ROWS);
    }
    ContainerFlows {
        id: local.id.clone(),
        addresses: local.addresses.clone(),
        conditioned: !local.conditions.is_clean(),
        rules: groups,
    }
}

#[cfg(test)]
mod tests;
