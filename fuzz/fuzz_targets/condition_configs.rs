#![no_main]
//! Any bytes as a configuration (weft's form and Synthetic Network's) and
//! as packets: refused with a field and a reason, or conditions that run
//! packets through a conditioner; never a panic, never more held than the
//! bound.

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use weft_condition::conditioner::MAX_QUEUED_PACKETS;
use weft_condition::synthetic::SyntheticNetwork;
use weft_condition::{Conditioner, Conditions, Direction, FlowKey};

fuzz_target!(|data: &[u8]| {
    let (config, packets) = data.split_at(
        data.len()
            .min(data.iter().position(|b| *b == 0).unwrap_or(data.len())),
    );
    let parsed = [
        Conditions::from_json(config),
        SyntheticNetwork::parse(config),
    ];
    for conditions in parsed.into_iter().flatten() {
        if let Ok(sn) = SyntheticNetwork::from_conditions(&conditions) {
            assert_eq!(sn.to_conditions().validate(), Ok(()));
        }
        let t0 = Instant::now();
        for dir in [Direction::Ingress, Direction::Egress] {
            let mut c = Conditioner::new(dir, conditions.clone(), 1);
            for (i, frame) in packets.chunks(64).enumerate() {
                let now = t0 + Duration::from_micros(i as u64 * 100);
                let key = FlowKey::of_frame(frame, dir);
                let _ = c.push(now, i, frame.len(), key.as_ref());
                while c.poll(now).is_some() {}
            }
            assert!(c.held() <= MAX_QUEUED_PACKETS);
        }
    }
    for dir in [Direction::Ingress, Direction::Egress] {
        let _ = FlowKey::of_frame(packets, dir);
        let _ = FlowKey::of_ip(packets, dir);
    }
});
