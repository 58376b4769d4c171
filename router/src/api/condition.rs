//! The conditioning routes. Synthetic Network's own API, verbatim, per
//! container: `GET /qos/<container>` and `POST /qos/<container>` (its
//! JSON, answered `OK`); weft's richer form beside it:
//! `GET|POST|DELETE /conditions/<container>`, and `GET /conditions` for
//! every conditioned container with its counters. `<container>` is the
//! attachment's id as `weft ps` shows it.
//!
//! Flow top (`GET|POST /flows`) lives here too: it is what a user looks
//! at to decide what to condition.

use http_body_util::Full;
use hyper::{Method, Response, StatusCode, body::Bytes};
use weft_condition::{Conditions, synthetic::SyntheticNetwork};

use super::{Api, json_of, text};
use crate::condition::ConditionError;

type Answer = Result<Response<Full<Bytes>>, Response<Full<Bytes>>>;

/// Which JSON a route speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Synthetic,
    Weft,
}

fn refused(e: ConditionError) -> Response<Full<Bytes>> {
    let status = match e {
        ConditionError::NotAttached(_) => StatusCode::NOT_FOUND,
        ConditionError::Config(_) => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    text(status, format!("{e}\n"))
}

impl Api {
    pub(super) async fn conditions(
        &self,
        method: &Method,
        form: Form,
        id: &str,
        body: &Bytes,
    ) -> Answer {
        let network = self
            .network
            .as_ref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no overlay network here\n"))?;
        let conditioning = &network.conditioning;
        if id.is_empty() {
            return Ok(json_of(&conditioning.list().await));
        }
        let attachment = network
            .registry
            .lock()
            .await
            .get(id)
            .cloned()
            .ok_or_else(|| refused(ConditionError::NotAttached(id.to_string())))?;
        let new = match *method {
            Method::GET => None,
            Method::DELETE => Some(Conditions::default()),
            _ => Some(
                match form {
                    Form::Synthetic => SyntheticNetwork::parse(body),
                    Form::Weft => Conditions::from_json(body),
                }
                .map_err(|e| refused(e.into()))?,
            ),
        };
        if let Some(conditions) = new {
            conditioning
                .set(network, &attachment, conditions)
                .await
                .map_err(refused)?;
            if form == Form::Synthetic {
                return Ok(text(StatusCode::OK, "OK"));
            }
        }
        let now = conditioning.get(id).await;
        Ok(match form {
            Form::Weft => json_of(&now),
            Form::Synthetic => match SyntheticNetwork::from_conditions(&now) {
                Ok(sn) => json_of(&sn),
                Err(e) => text(
                    StatusCode::CONFLICT,
                    format!("{e} (GET /conditions/{id})\n"),
                ),
            },
        })
    }
}

impl Api {
    /// `GET /flows` reads flow top; `POST /flows` also keeps it counting.
    pub(super) async fn flows(&self, watch: bool) -> Answer {
        Ok(json_of(&self.flows_report(watch).await?))
    }

    /// Flow top's reading; with `watch`, counting goes on for a minute.
    pub(super) async fn flows_report(
        &self,
        watch: bool,
    ) -> Result<crate::flows::top::FlowsReport, Response<Full<Bytes>>> {
        let network = self
            .network
            .as_ref()
            .ok_or_else(|| text(StatusCode::SERVICE_UNAVAILABLE, "no overlay network here\n"))?;
        let attachments = network.registry.lock().await.list();
        let mut locals = Vec::with_capacity(attachments.len());
        for a in attachments {
            locals.push(crate::flows::Local {
                conditions: network.conditioning.get(&a.id).await,
                addresses: a.addresses.iter().map(|n| n.addr()).collect(),
                id: a.id,
            });
        }
        network.flows.report(&locals, watch).await.map_err(|e| {
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot count flows: {e}\n"),
            )
        })
    }
}

impl Api {
    /// Conditioned containers (counted as `weft status` counts them) and
    /// their conditioners' counters.
    pub(super) async fn condition_metrics(&self, m: &mut crate::daemon::router::Metrics) {
        let Some(network) = &self.network else { return };
        m.conditioned = network.conditioning.by().await;
        for c in network.conditioning.list().await {
            let Some(counters) = c.counters else { continue };
            for (direction, rules) in [("ingress", counters.ingress), ("egress", counters.egress)] {
                for (rule, n) in rules {
                    m.conditioner
                        .push(([c.id.clone(), rule, direction.to_string()], n));
                }
            }
        }
    }
}
