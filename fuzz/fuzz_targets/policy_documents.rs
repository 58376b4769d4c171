#![no_main]
//! Any text as `weft policy apply -f`'s input: refused with a reason, or
//! policies that compile and render, never a panic.

use libfuzzer_sys::fuzz_target;
use weft_policy::{
    Endpoint, Inventory, Protocol,
    compile::compile,
    model::parse_documents,
    nft::render,
};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(documents) = parse_documents(text) else {
        return;
    };
    let policies: Vec<_> = documents.into_iter().map(|(_, p)| p).collect();
    let inventory = Inventory {
        endpoints: (0..4u8)
            .map(|i| Endpoint {
                name: format!("default/c{i}"),
                addr: [10, 32, 0, i + 1].into(),
                namespace: if i % 2 == 0 { "default".into() } else { "x".into() },
                labels: [("pod".to_string(), format!("p{i}"))].into(),
                ports: [("http".to_string(), (Protocol::Tcp, 80))].into(),
            })
            .collect(),
        namespaces: Default::default(),
    };
    let plan = compile(&policies, &inventory, |_| true);
    let _ = render(&plan);
    let _ = plan.verdict([10, 32, 0, 1].into(), [10, 32, 0, 2].into(), Protocol::Udp, 53);
});
