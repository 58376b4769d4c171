//! `weft condition CONTAINER ...`: sets, clears or shows a container's
//! conditions through the API's `/conditions/<container>` (and `/qos/`
//! for a file in Synthetic Network's form).

use std::io::Read as _;

use anyhow::{Context, Result, bail};
use weft_condition::{Conditions, Qos, qos::RateMode, synthetic::SyntheticNetwork};

use super::{
    args::{ConditionArgs, ConditionDirection},
    client,
};

impl ConditionArgs {
    /// The default link's settings the flags give, if any.
    fn qos(&self) -> Option<Qos> {
        let given = self.latency.is_some()
            || self.jitter.is_some()
            || self.jitter_strength.is_some()
            || self.loss.is_some()
            || self.loss_burst.is_some()
            || self.rate.is_some()
            || self.queue_limit.is_some()
            || self.duplicate.is_some()
            || self.reorder
            || self.police;
        given.then(|| Qos {
            rate: self.rate,
            rate_mode: if self.police {
                RateMode::Police
            } else {
                RateMode::Shape
            },
            queue_limit: self.queue_limit,
            loss: self.loss.unwrap_or(0.0),
            loss_burst: self.loss_burst,
            latency: self.latency.unwrap_or(0.0),
            jitter: self.jitter.unwrap_or(0.0),
            jitter_strength: self.jitter_strength.unwrap_or(1.0),
            reorder: self.reorder,
            duplicate: self.duplicate.unwrap_or(0.0),
        })
    }
}

pub fn condition(args: &ConditionArgs) -> Result<()> {
    let api = client(&args.dirs);
    let path = format!("/conditions/{}", args.container);
    let show = |text: &str| -> Result<()> {
        let now: Conditions = serde_json::from_str(text).context("the router's answer")?;
        if now.is_clean() {
            println!("{}: no conditions", args.container);
        } else {
            println!("{}", serde_json::to_string_pretty(&now)?);
        }
        Ok(())
    };
    if args.clear {
        return show(&api.post(&path, "{}")?);
    }
    if let Some(file) = &args.file {
        let mut text = Vec::new();
        if file.as_os_str() == "-" {
            std::io::stdin().read_to_end(&mut text)?;
        } else {
            text =
                std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
        }
        // weft's form first; a file in Synthetic Network's goes to its
        // own route, as its client would send it.
        return match Conditions::from_json(&text) {
            Ok(c) => show(&api.post(&path, &serde_json::to_string(&c)?)?),
            Err(weft_error) => match SyntheticNetwork::parse(&text) {
                Ok(_) => {
                    api.post(
                        &format!("/qos/{}", args.container),
                        std::str::from_utf8(&text)?,
                    )?;
                    show(&api.get(&path)?)
                }
                Err(_) => bail!("{}: {weft_error}", file.display()),
            },
        };
    }
    let Some(qos) = args.qos() else {
        return show(&api.get(&path)?);
    };
    let mut now: Conditions =
        serde_json::from_str(&api.get(&path)?).context("the router's answer")?;
    let link = &mut now.default_link;
    match args.direction {
        ConditionDirection::Both => {
            link.ingress = qos.clone();
            link.egress = qos;
        }
        ConditionDirection::Ingress => link.ingress = qos,
        ConditionDirection::Egress => link.egress = qos,
    }
    show(&api.post(&path, &serde_json::to_string(&now)?)?)
}

#[cfg(test)]
mod tests {
    use crate::cli::args::parse_rate;

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("500k"), Ok(500_000));
        assert_eq!(parse_rate("10M"), Ok(10_000_000));
        assert_eq!(parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(parse_rate("10mbps"), Ok(10_000_000));
        assert!(parse_rate("fast").unwrap_err().contains("10M"));
        assert!(parse_rate("-1M").is_err());
    }
}
