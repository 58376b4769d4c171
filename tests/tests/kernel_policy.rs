//! The NetworkPolicy conformance cases on the fast datapath, in the kernel
//! VM: the same cases and truth tables as on the userspace path
//! (tests/tests/policy.rs), with the containers' traffic between hosts in
//! the kernel's openvswitch datapath. Every third case: under emulation
//! each case takes 10-20 s on the slower machines CI runs on, and all 43
//! would take most of the suite's half hour; the userspace path and the
//! Kubernetes source run all of them. WEFT_NETPOL_STRIDE=1 runs all 43
//! here too (`WEFT_NETPOL_STRIDE=1 scripts/vm-test conformance_cases`).

use testbed::{Spec, Testbed, netpol::Model};

#[test]
fn conformance_cases_hold_with_real_traffic_on_the_fast_datapath() {
    let tb = Testbed::create_owned("kpol", Spec::hosts(3).containers(3)).unwrap();
    let mut model = Model::start(&tb, &["--resolv-conf", "/dev/null"], "fastdp").unwrap();
    let stride = std::env::var("WEFT_NETPOL_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(3);
    let failed = model.check_every(stride);
    drop(model);
    tb.destroy().unwrap();
    testbed::netpol::assert_all_held(&failed);
}
