//! Conditions the kernel keeps exactly on its own: a rate alone, shaped
//! (a token bucket with a queue, `tbf`), in either direction, with no
//! flow rules. For those a container stays on the bridge and no frame
//! of it passes through the router; everything else needs the
//! conditioner.

use crate::{Conditions, Qos, qos::RateMode};

/// One direction's token bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tbf {
    /// Bits per second of whole Ethernet frames, as the kernel counts:
    /// the conditions' rate raised by the header's share of a full-size
    /// frame ([`frame_rate`]).
    pub rate: u64,
    /// Bytes queued before frames are dropped: the shaper's queue limit.
    pub limit: u64,
    /// Bytes that may leave back to back: 4 ms at the rate and at least
    /// two full frames, so no burst is worth mentioning and the bucket
    /// still keeps up at high rates on a kernel that ticks at 250 Hz.
    pub burst: u64,
}

/// What the kernel shapes for a container: towards it (`ingress`, on the
/// host's end of its veth) and from it (`egress`, on its own end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelShaping {
    pub ingress: Option<Tbf>,
    pub egress: Option<Tbf>,
}

const FULL_FRAME: u64 = 1_514;
const ETHERNET_HEADER: u64 = 14;

/// The kernel counts whole Ethernet frames where the conditioner counts
/// IP packets. Raising the kernel's rate by the header's share of a
/// full-size frame gives full-size packets the same `rate` of IP bits as
/// the conditioner would, so a bulk transfer gets the same goodput either
/// way; small packets get a little less through the kernel (their header
/// is a larger share). A size table with a negative overhead, which would
/// count exactly the same bytes, was tried: it made the rate both lower
/// and erratic.
pub fn frame_rate(rate: u64) -> u64 {
    let scaled =
        u128::from(rate) * u128::from(FULL_FRAME) / u128::from(FULL_FRAME - ETHERNET_HEADER);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

fn tbf(q: &Qos) -> Option<Option<Tbf>> {
    if q.is_clean() {
        return Some(None);
    }
    let rate = q.rate.filter(|r| *r > 0)?;
    let rate_only = Qos {
        rate: Some(rate),
        rate_mode: RateMode::Shape,
        queue_limit: q.queue_limit,
        jitter_strength: q.jitter_strength,
        ..Qos::default()
    };
    if *q != rate_only {
        return None;
    }
    Some(Some(Tbf {
        rate: frame_rate(rate),
        limit: q.queue_bytes(),
        burst: (rate / 8 / 250).max(2 * FULL_FRAME),
    }))
}

impl Conditions {
    /// The kernel's shapers for these conditions, when they are all these
    /// conditions ask for (and something is asked).
    pub fn kernel_shaping(&self) -> Option<KernelShaping> {
        if !self.flows.is_empty() || self.is_clean() {
            return None;
        }
        Some(KernelShaping {
            ingress: tbf(&self.default_link.ingress)?,
            egress: tbf(&self.default_link.egress)?,
        })
    }
}

impl Tbf {
    /// `tc` arguments that put this bucket on `dev` in place of whatever
    /// its root qdisc was (`verb` `replace`), or only change the bucket
    /// already there, keeping its queue (`change`).
    pub fn tc_args(&self, verb: &str, dev: &str) -> Vec<String> {
        ["qdisc", verb, "dev", dev, "root", "tbf", "rate"]
            .into_iter()
            .map(String::from)
            .chain([
                format!("{}bit", self.rate),
                "burst".into(),
                self.burst.to_string(),
                "limit".into(),
                self.limit.to_string(),
            ])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlowMatch, FlowRule, Link};

    fn both(q: Qos) -> Conditions {
        Conditions {
            default_link: Link {
                ingress: q.clone(),
                egress: q,
            },
            flows: vec![],
        }
    }

    fn rate(r: u64) -> Qos {
        Qos {
            rate: Some(r),
            ..Qos::default()
        }
    }

    #[test]
    fn a_shaped_rate_alone_goes_to_the_kernel() {
        let k = both(rate(10_000_000)).kernel_shaping().unwrap();
        let t = k.egress.unwrap();
        assert_eq!(k.ingress, Some(t));
        assert_eq!(t.rate, 10_093_333, "10 Mbit/s of IP in full-size frames");
        assert_eq!(
            t.limit,
            rate(10_000_000).queue_bytes(),
            "the shaper's own queue"
        );
        assert_eq!(t.burst, 5_000, "4 ms at 10 Mbit/s");
        assert_eq!(
            both(rate(1_000_000))
                .kernel_shaping()
                .unwrap()
                .egress
                .unwrap()
                .burst,
            3_028
        );
        assert_eq!(
            t.tc_args("replace", "weft0").join(" "),
            "qdisc replace dev weft0 root tbf rate 10093333bit burst 5000 limit 125000"
        );

        let mut one_way = both(Qos::default());
        one_way.default_link.egress = rate(1_000_000);
        let k = one_way.kernel_shaping().unwrap();
        assert_eq!(
            (k.ingress, k.egress.map(|t| t.rate)),
            (None, Some(frame_rate(1_000_000)))
        );
    }

    #[test]
    fn anything_more_than_a_shaped_rate_needs_the_conditioner() {
        let with = |f: fn(&mut Qos)| {
            let mut q = rate(10_000_000);
            f(&mut q);
            both(q).kernel_shaping()
        };
        assert_eq!(with(|q| q.loss = 0.01), None);
        assert_eq!(with(|q| q.latency = 1.0), None);
        assert_eq!(with(|q| q.jitter = 5.0), None);
        assert_eq!(with(|q| q.duplicate = 0.1), None);
        assert_eq!(with(|q| q.rate_mode = RateMode::Police), None);
        assert_eq!(
            with(|q| q.rate = Some(0)),
            None,
            "a rate of 0 passes nothing"
        );
        assert!(with(|q| q.queue_limit = Some(64_000)).is_some());
        assert!(
            with(|q| q.jitter_strength = 0.5).is_some(),
            "no jitter to strengthen"
        );
        assert_eq!(both(Qos::default()).kernel_shaping(), None, "nothing to do");
        let mut rules = both(rate(10_000_000));
        rules.flows.push(FlowRule {
            label: "dns".into(),
            flow: FlowMatch::default(),
            link: Link::default(),
        });
        assert_eq!(
            rules.kernel_shaping(),
            None,
            "flow rules are the conditioner's"
        );
    }
}
