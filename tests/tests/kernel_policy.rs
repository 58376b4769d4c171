//! The NetworkPolicy conformance cases on the fast datapath, in the kernel
//! VM: the same 43 cases and truth tables as on the userspace path
//! (tests/tests/policy.rs), with the containers' traffic between hosts in
//! the kernel's openvswitch datapath. All 43 take about 4 minutes under
//! emulation here (4-5 s a case); WEFT_NETPOL_STRIDE=N runs every Nth
//! case for a quicker look (`WEFT_NETPOL_STRIDE=3 scripts/vm-test
//! conformance_cases`).

use testbed::{Spec, Testbed, netpol::Model};

#[test]
fn conformance_cases_hold_with_real_traffic_on_the_fast_datapath() {
    let tb = Testbed::create_owned("kpol", Spec::hosts(3).containers(3)).unwrap();
    let mut model = Model::start(&tb, &["--resolv-conf", "/dev/null"], "fastdp").unwrap();
    let stride = std::env::var("WEFT_NETPOL_STRIDE")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(1);
    let failed = model.check_every(stride);
    drop(model);
    tb.destroy().unwrap();
    testbed::netpol::assert_all_held(&failed);
}
