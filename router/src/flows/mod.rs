//! Flow top: per-flow packets, bytes and rates for this host's
//! containers, on both data paths, grouped by the conditioning rule each
//! flow matches (`weft top`, `/flows`).
//!
//! Counting costs a set update per frame at the bridge, so it runs only
//! while someone watches: a reader that asks for it (`POST /flows`,
//! which over TCP needs the API token like any change) turns it on for
//! [`WATCH_FOR`], and with nobody asking again the table is removed.
//! The table is [`table`]'s; the arithmetic is [`top`]'s and pure.

pub mod profile;
pub mod table;
pub mod top;

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

pub use top::{FlowsReport, Local};

use crate::firewall::{self, FirewallError};

/// How long counting goes on after the last reader asked for it.
pub const WATCH_FOR: Duration = Duration::from_secs(60);

/// The router's side of flow top: whether the table is in, and the last
/// reading.
#[derive(Default)]
pub struct FlowTop {
    state: std::sync::Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    /// Until when counting runs, while it does.
    watched_until: Option<Instant>,
    top: top::Top,
}

impl FlowTop {
    /// Removes a table a previous router left behind (it crashed while
    /// someone watched): nobody watches a router that just started.
    pub async fn clear() -> Result<(), FirewallError> {
        firewall::apply_script(&table::removal()).await
    }

    /// What the table has counted; with `watch`, counting starts (or goes
    /// on for another [`WATCH_FOR`]). Without it and with counting off,
    /// the report is empty and says so.
    pub async fn report(
        &self,
        locals: &[Local],
        watch: bool,
    ) -> Result<FlowsReport, FirewallError> {
        let mut state = self.state.lock().await;
        let now = Instant::now();
        if watch {
            if state.watched_until.is_none() {
                firewall::apply_script(&table::script()).await?;
                state.top.reset();
                tokio::spawn(stop_when_unwatched(self.state.clone()));
                tracing::info!("flow top: counting flows at the bridge while someone watches");
            }
            state.watched_until = Some(now + WATCH_FOR);
        }
        if state.watched_until.is_none() {
            return Ok(FlowsReport::default());
        }
        let listing =
            match firewall::nft_output(&["-j", "-p", "list", "table", table::FAMILY, table::TABLE])
                .await?
            {
                Some(json) => {
                    table::parse(&json).map_err(|e| FirewallError::Refused(e.to_string()))?
                }
                None => {
                    // Deleted under us: put back, counting from here.
                    firewall::apply_script(&table::script()).await?;
                    state.top.reset();
                    table::Listing::default()
                }
            };
        Ok(state
            .top
            .observe(now, &listing.samples, listing.full, locals))
    }
}

/// Removes the table once nobody has asked for [`WATCH_FOR`].
async fn stop_when_unwatched(state: std::sync::Arc<Mutex<State>>) {
    loop {
        let until = match state.lock().await.watched_until {
            Some(until) => until,
            None => return,
        };
        tokio::time::sleep_until(until.into()).await;
        let mut s = state.lock().await;
        if s.watched_until.is_some_and(|u| u <= Instant::now()) {
            if let Err(e) = firewall::apply_script(&table::removal()).await {
                tracing::warn!(error = %e, "flow top: cannot remove the counting table; trying again in 10 s");
                drop(s);
                tokio::time::sleep(Duration::from_secs(10)).await;
                continue;
            }
            s.watched_until = None;
            s.top.reset();
            tracing::info!("flow top: nobody watches, counting stopped");
            return;
        }
    }
}
