//! Whether a range of container addresses would collide with the host's
//! own network: a pure check over the host's routes and addresses, so
//! that a range covering the host's LAN is refused at launch instead of
//! IPAM handing out the host's own address.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A route or address of the host, and the interface it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostNet {
    pub net: Ipv4Net,
    pub device: String,
}

/// Ranges offered instead, in order: the first that collides with nothing.
const ALTERNATIVES: [&str; 5] = [
    "10.32.0.0/12",
    "10.48.0.0/12",
    "172.24.0.0/13",
    "100.64.0.0/12",
    "192.168.224.0/20",
];

fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Why `net` (what the user called `what`) cannot be weft's, or `None`.
/// `routes` and `addresses` are the host's, without weft's own devices;
/// the default route overlaps everything and is not a collision.
pub fn check(
    net: Ipv4Net,
    what: &str,
    routes: &[HostNet],
    addresses: &[HostNet],
) -> Option<String> {
    let problem = problem(net, routes, addresses)?;
    let advice = ALTERNATIVES
        .iter()
        .map(|a| a.parse::<Ipv4Net>().expect("a valid range"))
        .find(|a| self::problem(*a, routes, addresses).is_none())
        .map(|a| format!("; choose one that collides with nothing, such as {a}"))
        .unwrap_or_else(|| "; choose one no route of this host covers".into());
    Some(format!("{what} {net} {problem}{advice}"))
}

fn problem(net: Ipv4Net, routes: &[HostNet], addresses: &[HostNet]) -> Option<String> {
    let loopback = Ipv4Net::new_assert(Ipv4Addr::new(127, 0, 0, 0), 8);
    Some(if net.prefix_len() == 0 {
        "covers every address (0.0.0.0/0), the host's own among them".to_string()
    } else if overlaps(net, loopback) {
        "overlaps loopback (127.0.0.0/8)".to_string()
    } else if let Some(a) = addresses.iter().find(|a| net.contains(&a.net.addr())) {
        format!(
            "holds this host's own address {} (on {})",
            a.net.addr(),
            a.device
        )
    } else if let Some(r) = routes
        .iter()
        .find(|r| r.net.prefix_len() > 0 && overlaps(net, r.net))
    {
        format!(
            "overlaps the host's route {} dev {}: containers would shadow, or be shadowed by, that network",
            r.net, r.device
        )
    } else {
        return None;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(net: &str, device: &str) -> HostNet {
        HostNet {
            net: net.parse().unwrap(),
            device: device.into(),
        }
    }

    fn lan() -> (Vec<HostNet>, Vec<HostNet>) {
        (
            vec![
                host("0.0.0.0/0", "eth0"),
                host("192.0.2.0/24", "eth0"),
                host("10.32.0.0/16", "tun0"),
            ],
            vec![host("192.0.2.1/24", "eth0")],
        )
    }

    #[test]
    fn a_range_over_the_hosts_lan_is_refused_with_the_route_named() {
        let (routes, addresses) = lan();
        let e = check(
            "192.0.2.0/24".parse().unwrap(),
            "--ipalloc-range",
            &routes,
            &addresses,
        )
        .unwrap();
        assert!(
            e.starts_with(
                "--ipalloc-range 192.0.2.0/24 holds this host's own address 192.0.2.1 (on eth0)"
            ),
            "{e}"
        );
        // The default 10.32.0.0/12 overlaps tun0's route: the advice skips it.
        assert!(e.ends_with("such as 10.48.0.0/12"), "{e}");
        let e = check(
            "10.0.0.0/8".parse().unwrap(),
            "--ipalloc-range",
            &routes,
            &addresses,
        )
        .unwrap();
        assert!(e.contains("route 10.32.0.0/16 dev tun0"), "{e}");
        let e = check(
            "192.0.2.128/25".parse().unwrap(),
            "address",
            &routes,
            &addresses,
        )
        .unwrap();
        assert!(e.contains("route 192.0.2.0/24 dev eth0"), "{e}");
    }

    #[test]
    fn everything_and_loopback_are_refused_and_a_free_range_passes() {
        let (routes, addresses) = lan();
        let e = check("0.0.0.0/0".parse().unwrap(), "r", &routes, &addresses).unwrap();
        assert!(e.contains("0.0.0.0/0"), "{e}");
        let e = check("127.0.0.0/16".parse().unwrap(), "r", &routes, &addresses).unwrap();
        assert!(e.contains("loopback"), "{e}");
        let e = check("64.0.0.0/2".parse().unwrap(), "r", &[], &[]).unwrap();
        assert!(e.contains("loopback"), "64.0.0.0/2 covers 127/8: {e}");
        // The default route alone is no collision.
        assert_eq!(
            check("10.48.0.0/12".parse().unwrap(), "r", &routes, &addresses),
            None
        );
    }
}
