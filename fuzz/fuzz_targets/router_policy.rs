#![no_main]
//! Any gossip payload on the policy channel: an error or a merge, never a
//! panic, and our full state reads back; any bytes as an NFLOG message:
//! a drop or nothing, never a panic; any bytes as a Pod or NetworkPolicy
//! from the API server: taken into the cluster view and compiled, never a
//! panic.

use std::time::Instant;

use k8s_openapi::api::{core::v1::Pod, networking::v1::NetworkPolicy};
use libfuzzer_sys::fuzz_target;
use weft_router::{
    identity::PeerName,
    mesh::Channel,
    policy::{
        cluster::{ClusterView, Event, PodFacts, PolicyFacts},
        droplog,
        records::Records,
        Known,
    },
};

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let mut records = Records::new(PeerName::from_u64(1), 10);
    records.on_peers_changed(now, &[PeerName::from_u64(2)].into());
    if records.on_gossip(now, PeerName::from_u64(2), data).is_ok() {
        let full = records.full_state().expect("a full state");
        let mut other = Records::new(PeerName::from_u64(3), 10);
        other
            .on_gossip(now, PeerName::from_u64(1), &full)
            .expect("our own state reads back");
        // Whatever arrived, compiling it is safe.
        let _ = Known::of(&records).plan_here();
    }
    let mut view = ClusterView::default();
    if let Ok(pod) = serde_json::from_slice::<Pod>(data) {
        let facts = PodFacts::of(&pod);
        view.pods.on(Event::Apply((facts.key(), facts.clone())));
        let local = facts.addr.into_iter().collect();
        let _ = view.known(&local).plan_here();
    }
    if let Ok(policy) = serde_json::from_slice::<NetworkPolicy>(data) {
        let facts = PolicyFacts::of(&policy, None);
        let again = PolicyFacts::of(&policy, Some(&facts));
        assert_eq!(facts, again, "a policy reads the same way twice");
        view.policies.on(Event::Apply(("x/p".into(), facts)));
        let _ = view.known(&Default::default()).plan_everywhere();
    }
    if let Some(d) = droplog::parse(data) {
        let _ = droplog::describe(&d, "x/a", &[]);
    }
});
