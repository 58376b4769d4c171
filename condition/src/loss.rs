//! Which packets are lost: each on its own (Bernoulli), or in bursts by a
//! two-state Gilbert model whose long-run loss is the configured fraction
//! and whose runs of loss have the configured mean length.

use rand::Rng;

use crate::qos::Qos;

#[derive(Debug, Clone, Default)]
pub struct LossModel {
    /// In the Gilbert model's bad state: every packet is lost until it
    /// leaves.
    bad: bool,
}

impl LossModel {
    pub fn lose(&mut self, q: &Qos, rng: &mut impl Rng) -> bool {
        if q.loss <= 0.0 {
            self.bad = false;
            return false;
        }
        if q.loss >= 1.0 {
            return true;
        }
        let Some(burst) = q.loss_burst else {
            return rng.random::<f64>() < q.loss;
        };
        // Leaving the bad state with chance 1/burst makes runs of loss
        // `burst` long on average; entering it with chance p makes the
        // share of time in it p / (p + 1/burst), which is `loss` when
        // p = loss / ((1 - loss) * burst).
        let leave = 1.0 / burst;
        let enter = q.loss * leave / (1.0 - q.loss);
        if self.bad {
            self.bad = rng.random::<f64>() >= leave;
        } else {
            self.bad = rng.random::<f64>() < enter;
        }
        self.bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    fn run(q: &Qos, n: usize) -> Vec<bool> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut m = LossModel::default();
        (0..n).map(|_| m.lose(q, &mut rng)).collect()
    }

    fn mean_run(lost: &[bool]) -> f64 {
        let runs = lost.windows(2).filter(|w| w[1] && !w[0]).count() + usize::from(lost[0]);
        lost.iter().filter(|l| **l).count() as f64 / runs as f64
    }

    #[test]
    fn independent_and_bursty_loss_have_the_configured_rate_and_runs() {
        let n = 200_000;
        let share = |l: &[bool]| l.iter().filter(|x| **x).count() as f64 / l.len() as f64;
        let none = run(&Qos::default(), n);
        assert_eq!(share(&none), 0.0);
        let all = run(
            &Qos {
                loss: 1.0,
                ..Qos::default()
            },
            1000,
        );
        assert_eq!(share(&all), 1.0);

        let bernoulli = run(
            &Qos {
                loss: 0.1,
                ..Qos::default()
            },
            n,
        );
        assert!(
            (share(&bernoulli) - 0.1).abs() < 0.005,
            "{}",
            share(&bernoulli)
        );
        let runs = mean_run(&bernoulli);
        assert!((runs - 1.0 / 0.9).abs() < 0.05, "independent runs: {runs}");

        let bursty = run(
            &Qos {
                loss: 0.02,
                loss_burst: Some(4.0),
                ..Qos::default()
            },
            n,
        );
        assert!((share(&bursty) - 0.02).abs() < 0.004, "{}", share(&bursty));
        let runs = mean_run(&bursty);
        assert!((runs - 4.0).abs() < 0.4, "bursts of 4 on average: {runs}");
    }
}
