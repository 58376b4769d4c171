//! What one direction of a container's traffic (or of one of its flows)
//! suffers, in weft's own form: every field optional, zero meaning "not
//! at all", so `{}` is a clean link and `{"latency": 100}` is only a delay.

use serde::{Deserialize, Serialize};

/// Rates above this are refused: no link here comes close, and it keeps
/// the shaper's arithmetic far from overflow.
pub const MAX_RATE: u64 = 1_000_000_000_000;
/// Latency and jitter above a minute are a mistake, not a network.
pub const MAX_DELAY_MS: f64 = 60_000.0;
/// The shaper's queue never holds more than this, whatever is asked.
pub const MAX_QUEUE_BYTES: u64 = 256 << 20;
/// The smallest queue that still takes a full-size frame.
pub const MIN_QUEUE_BYTES: u64 = 1_514;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Qos {
    /// Bits per second of IP packets; `None` is no limit, 0 passes nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<u64>,
    /// How the rate is kept: a shaper queues (the default), a policer drops.
    #[serde(skip_serializing_if = "is_default")]
    pub rate_mode: RateMode,
    /// The shaper's queue in bytes (default: 100 ms at the rate, at least
    /// 32 KiB); the policer's burst in bytes (default: 10 ms at the rate,
    /// at least two full frames).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_limit: Option<u64>,
    /// Fraction of packets lost, 0 to 1.
    #[serde(skip_serializing_if = "is_zero")]
    pub loss: f64,
    /// Mean length of a run of lost packets: with it, loss comes in bursts
    /// (a Gilbert model whose long-run loss is `loss`); without, each
    /// packet is lost on its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_burst: Option<f64>,
    /// Milliseconds added to every packet.
    #[serde(skip_serializing_if = "is_zero")]
    pub latency: f64,
    /// Up to this many milliseconds more, uniformly, for jittered packets.
    #[serde(skip_serializing_if = "is_zero")]
    pub jitter: f64,
    /// Fraction of packets jittered, 0 to 1 (default 1: all of them).
    #[serde(skip_serializing_if = "is_one")]
    pub jitter_strength: f64,
    /// Let packets overtake each other when their delays say so.
    #[serde(skip_serializing_if = "is_false")]
    pub reorder: bool,
    /// Fraction of packets sent twice, 0 to 1.
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicate: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateMode {
    #[default]
    Shape,
    Police,
}

impl Default for Qos {
    /// A link with nothing done to it.
    fn default() -> Qos {
        Qos {
            rate: None,
            rate_mode: RateMode::Shape,
            queue_limit: None,
            loss: 0.0,
            loss_burst: None,
            latency: 0.0,
            jitter: 0.0,
            jitter_strength: 1.0,
            reorder: false,
            duplicate: 0.0,
        }
    }
}

impl Qos {
    /// True when no packet is delayed, lost, limited or copied.
    pub fn is_clean(&self) -> bool {
        self.rate.is_none()
            && self.loss == 0.0
            && self.latency == 0.0
            && (self.jitter == 0.0 || self.jitter_strength == 0.0)
            && self.duplicate == 0.0
    }

    /// The queue (shaper) or burst (policer) in bytes, as configured or by
    /// default for the rate.
    pub fn queue_bytes(&self) -> u64 {
        if let Some(q) = self.queue_limit {
            return q;
        }
        let per_sec = self.rate.unwrap_or(0) / 8;
        match self.rate_mode {
            RateMode::Shape => (per_sec / 10).clamp(32 << 10, MAX_QUEUE_BYTES),
            RateMode::Police => (per_sec / 100).clamp(2 * MIN_QUEUE_BYTES, MAX_QUEUE_BYTES),
        }
    }

    /// Checks every field; the error names the first bad one (under
    /// `path`) and why.
    pub fn validate(&self, path: &str) -> Result<(), (String, String)> {
        let field = |name: &str| format!("{path}.{name}");
        if let Some(rate) = self.rate
            && rate > MAX_RATE
        {
            return Err((
                field("rate"),
                format!("{rate} bits/s is above the limit of {MAX_RATE}"),
            ));
        }
        if let Some(q) = self.queue_limit
            && !(MIN_QUEUE_BYTES..=MAX_QUEUE_BYTES).contains(&q)
        {
            return Err((
                field("queue_limit"),
                format!("{q} bytes is outside {MIN_QUEUE_BYTES}..={MAX_QUEUE_BYTES}"),
            ));
        }
        for (name, v) in [
            ("loss", self.loss),
            ("jitter_strength", self.jitter_strength),
            ("duplicate", self.duplicate),
        ] {
            fraction(v).map_err(|why| (field(name), why))?;
        }
        for (name, v) in [("latency", self.latency), ("jitter", self.jitter)] {
            if !v.is_finite() || !(0.0..=MAX_DELAY_MS).contains(&v) {
                return Err((field(name), format!("{v} ms is outside 0..={MAX_DELAY_MS}")));
            }
        }
        if let Some(b) = self.loss_burst {
            if !b.is_finite() || !(1.0..=1e6).contains(&b) {
                return Err((
                    field("loss_burst"),
                    format!("a mean burst of {b} packets is outside 1..=1000000"),
                ));
            }
            // The chance of entering a burst, loss / ((1 - loss) * burst),
            // must be a probability.
            if self.loss > b / (1.0 + b) {
                return Err((
                    field("loss_burst"),
                    format!(
                        "a loss of {} cannot come in bursts of {b} packets on average \
                         (at most {:.3}); lengthen the bursts or lower the loss",
                        self.loss,
                        b / (1.0 + b)
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn fraction(v: f64) -> Result<(), String> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(format!("{v} is not a fraction between 0 and 1"))
    }
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}
fn is_one(v: &f64) -> bool {
    *v == 1.0
}
fn is_false(v: &bool) -> bool {
    !v
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Qos {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn an_empty_object_is_a_clean_link_and_fields_default_sensibly() {
        let q = parse("{}");
        assert_eq!(q, Qos::default());
        assert_eq!(
            q.jitter_strength, 1.0,
            "jitter, when given, hits every packet"
        );
        assert!(q.is_clean());
        assert_eq!(serde_json::to_string(&q).unwrap(), "{}");
        let q = parse(r#"{"latency": 150, "jitter": 30, "loss": 0.02, "loss_burst": 3}"#);
        assert!(!q.is_clean());
        assert_eq!(q.validate("x"), Ok(()));
        assert_eq!(parse(r#"{"rate": 8000000}"#).queue_bytes(), 100_000);
        assert_eq!(parse(r#"{"rate": 1000}"#).queue_bytes(), 32 << 10);
        assert_eq!(
            parse(r#"{"rate": 8000000, "rate_mode": "police"}"#).queue_bytes(),
            10_000
        );
    }

    #[test]
    fn bad_fields_are_named_with_the_reason() {
        let bad = [
            (r#"{"loss": 1.5}"#, "x.loss", "fraction"),
            (
                r#"{"jitter_strength": -0.1}"#,
                "x.jitter_strength",
                "fraction",
            ),
            (r#"{"latency": 1e9}"#, "x.latency", "outside"),
            (r#"{"rate": 2000000000000}"#, "x.rate", "limit"),
            (r#"{"queue_limit": 10}"#, "x.queue_limit", "outside"),
            (r#"{"loss_burst": 0.5}"#, "x.loss_burst", "outside"),
            (
                r#"{"loss": 0.9, "loss_burst": 2}"#,
                "x.loss_burst",
                "lower the loss",
            ),
        ];
        for (json, field, why) in bad {
            let (f, reason) = parse(json).validate("x").unwrap_err();
            assert_eq!(f, field, "{json}");
            assert!(reason.contains(why), "{json}: {reason}");
        }
        assert!(serde_json::from_str::<Qos>(r#"{"lossy": 1}"#).is_err());
    }
}
