//! The rate stage. A shaper gives each packet the time its last bit
//! leaves a link of the configured rate, queueing up to a byte limit and
//! dropping beyond it; there is no burst allowance, so a link of R never
//! passes more than R plus one packet in any window. A policer passes
//! what fits a token bucket (of the configured burst) and drops the rest.

use std::time::{Duration, Instant};

use crate::qos::{Qos, RateMode};

#[derive(Debug, Clone, Default)]
pub struct RateStage {
    /// Shaper: when the link is free again.
    free_at: Option<Instant>,
    /// Policer: bytes of credit, and when they were counted.
    tokens: Option<(f64, Instant)>,
}

/// The time `bytes` take at `rate` bits per second.
pub fn wire_time(bytes: usize, rate: u64) -> Duration {
    let nanos = (bytes as u128 * 8 * 1_000_000_000).div_ceil(u128::from(rate));
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

impl RateStage {
    /// When a packet of `len` bytes arriving `now` may go on, or `None`
    /// when it is dropped.
    pub fn admit(&mut self, now: Instant, len: usize, q: &Qos) -> Option<Instant> {
        let Some(rate) = q.rate else {
            return Some(now);
        };
        if rate == 0 {
            return None;
        }
        match q.rate_mode {
            RateMode::Shape => self.shape(now, len, rate, q.queue_bytes()),
            RateMode::Police => self.police(now, len, rate, q.queue_bytes()),
        }
    }

    fn shape(&mut self, now: Instant, len: usize, rate: u64, limit: u64) -> Option<Instant> {
        let start = self.free_at.map_or(now, |t| t.max(now));
        // What is still queued ahead, in bytes, is the time the link stays
        // busy at its rate.
        let ahead = (start - now).as_nanos() * u128::from(rate) / 8_000_000_000;
        if ahead + len as u128 > u128::from(limit) {
            return None;
        }
        let done = start + wire_time(len, rate);
        self.free_at = Some(done);
        Some(done)
    }

    fn police(&mut self, now: Instant, len: usize, rate: u64, burst: u64) -> Option<Instant> {
        let burst = burst as f64;
        let (tokens, at) = self.tokens.unwrap_or((burst, now));
        let earned = now.saturating_duration_since(at).as_secs_f64() * rate as f64 / 8.0;
        let tokens = (tokens + earned).min(burst);
        if tokens >= len as f64 {
            self.tokens = Some((tokens - len as f64, now));
            Some(now)
        } else {
            self.tokens = Some((tokens, now));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Offers `offered` bits/s of 1500-byte packets for `secs` seconds to
    /// a stage of `q`; returns the departure times.
    fn offer(q: &Qos, offered: u64, secs: u64) -> (Vec<Instant>, Instant) {
        let t0 = Instant::now();
        let gap = wire_time(1500, offered);
        let mut stage = RateStage::default();
        let mut out = Vec::new();
        let mut now = t0;
        while now < t0 + Duration::from_secs(secs) {
            out.extend(stage.admit(now, 1500, q));
            now += gap;
        }
        (out, t0)
    }

    /// Bytes leaving in each `window` from `t0`, over `secs` seconds.
    fn per_window(out: &[Instant], t0: Instant, window: Duration, secs: u64) -> Vec<u64> {
        let n = (Duration::from_secs(secs).as_nanos() / window.as_nanos()) as usize;
        let mut w = vec![0; n];
        for t in out {
            let i = ((*t - t0).as_nanos() / window.as_nanos()) as usize;
            if i < n {
                w[i] += 1500;
            }
        }
        w
    }

    #[test]
    fn a_shaper_holds_the_rate_in_every_window_with_no_burst() {
        for rate in [1_000_000, 10_000_000, 100_000_000] {
            let q = Qos {
                rate: Some(rate),
                ..Qos::default()
            };
            let (out, t0) = offer(&q, rate * 2, 5);
            let window = Duration::from_millis(100);
            let per = per_window(&out, t0, window, 5);
            let most = rate / 8 / 10 + 1500;
            for (i, bytes) in per.iter().enumerate() {
                assert!(*bytes <= most, "{rate}: window {i} passed {bytes} > {most}");
            }
            let total: u64 = per.iter().sum();
            let expect = rate / 8 * 5;
            let off = (total as f64 - expect as f64).abs() / expect as f64;
            assert!(
                off < 0.01,
                "{rate}: {total} bytes in 5 s, expected {expect}"
            );
        }
    }

    #[test]
    fn a_shaper_queues_up_to_its_limit_and_drops_beyond() {
        let q = Qos {
            rate: Some(8_000_000),
            queue_limit: Some(15_000),
            ..Qos::default()
        };
        let t0 = Instant::now();
        let mut s = RateStage::default();
        // Ten 1500-byte packets at once fit; the eleventh does not.
        let times: Vec<Option<Instant>> = (0..11).map(|_| s.admit(t0, 1500, &q)).collect();
        assert!(times[..10].iter().all(Option::is_some));
        assert_eq!(times[10], None);
        // 1500 bytes at 1 MB/s: 1.5 ms apart.
        assert_eq!(
            times[1].unwrap() - times[0].unwrap(),
            Duration::from_micros(1500)
        );
        // Once the queue has drained, it takes packets again.
        assert!(s.admit(t0 + Duration::from_millis(3), 1500, &q).is_some());
        let none = Qos {
            rate: Some(0),
            ..Qos::default()
        };
        assert_eq!(
            RateStage::default().admit(t0, 60, &none),
            None,
            "rate 0 passes nothing"
        );
    }

    #[test]
    fn a_policer_passes_its_burst_then_the_rate() {
        let q = Qos {
            rate: Some(8_000_000),
            rate_mode: RateMode::Police,
            queue_limit: Some(15_000),
            ..Qos::default()
        };
        let (out, t0) = offer(&q, 16_000_000, 5);
        assert!(out.iter().all(|t| t >= &t0), "a policer never delays");
        let total = out.len() as u64 * 1500;
        let expect = 1_000_000 * 5 + 15_000;
        assert!(total <= expect + 1500, "{total} > {expect}");
        assert!(total as f64 > expect as f64 * 0.98, "{total} < {expect}");
    }
}
