//! The NetworkPolicy conformance cases on the fast datapath, in the kernel
//! VM: the same cases and truth tables as on the userspace path
//! (tests/tests/policy.rs), with the containers' traffic between hosts in
//! the kernel's openvswitch datapath.

use testbed::{Spec, Testbed, netpol::Model};

#[test]
fn conformance_cases_hold_with_real_traffic_on_the_fast_datapath() {
    let tb = Testbed::create_owned("kpol", Spec::hosts(3).containers(3)).unwrap();
    let mut model = Model::start(&tb, &["--resolv-conf", "/dev/null"], "fastdp").unwrap();
    let cases = weft_policy::cases::load().unwrap();
    let mut failed = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        if let Err(e) = model.check(n, case) {
            eprintln!("FAIL {}", case.title);
            failed.push(e);
        }
    }
    drop(model);
    tb.destroy().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} cases failed on fastdp:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
}
