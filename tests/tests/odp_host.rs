//! The odp crate on a kernel without openvswitch, like the CI host: the
//! client must say the module is missing, distinctly from other errors,
//! because the router chooses its data path from that answer.

use std::path::Path;

use weft_odp::{Client, Error};

fn module_available() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    Path::new("/sys/module/openvswitch").exists()
        || Path::new("/lib/modules")
            .join(release.trim())
            .join("kernel/net/openvswitch")
            .exists()
}

#[test]
fn a_kernel_without_openvswitch_is_reported_as_such() {
    match Client::connect() {
        Err(Error::ModuleNotLoaded { family }) => {
            assert!(
                !module_available(),
                "the module exists but was reported missing"
            );
            assert_eq!(family, "ovs_datapath");
            let message = Error::ModuleNotLoaded { family }.to_string();
            assert!(
                message.contains("modprobe openvswitch"),
                "the error says what to do: {message}"
            );
        }
        Ok(_) => assert!(module_available(), "connected, so the module must be there"),
        Err(other) => panic!("expected ModuleNotLoaded or success, got {other}"),
    }
}
