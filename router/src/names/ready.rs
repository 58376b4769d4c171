//! Whether an instance is ready: something listens on its declared port
//! inside its network namespace. Read from the kernel's socket tables as
//! the namespace sees them, on a thread that enters it and then ends (so
//! no thread that runs anything else is ever left inside a container).

use std::{collections::BTreeSet, fs::File, io};

/// The TCP ports in LISTEN state in a `/proc/net/tcp` or `tcp6` table.
/// Lines that do not parse are skipped: the table's format is the
/// kernel's, and one odd line must not hide the others.
pub fn listening_ports(table: &str) -> BTreeSet<u16> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1)?;
            let state = fields.nth(1)?;
            if state != "0A" {
                return None;
            }
            let (_, port) = local.rsplit_once(':')?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect()
}

/// The TCP ports something listens on inside `netns`.
pub fn ports_listening_in(netns: &File) -> io::Result<BTreeSet<u16>> {
    let fd = netns.try_clone()?;
    std::thread::Builder::new()
        .name("weft-netns".into())
        .spawn(move || {
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(io::Error::from)?;
            let mut ports = BTreeSet::new();
            for table in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
                // No IPv6 in the namespace is no table, not an error.
                if let Ok(text) = std::fs::read_to_string(table) {
                    ports.extend(listening_ports(&text));
                }
            }
            Ok(ports)
        })?
        .join()
        .map_err(|_| io::Error::other("the namespace reader panicked"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listening_sockets_count() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1538 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0000000000000000 100 0 0 10 0
   2: 0500200A:9C40 0600200A:1538 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0000000000000000 20 4 30 10 -1
   3: garbage
";
        assert_eq!(listening_ports(table), BTreeSet::from([0x1538, 80]));
        let v6 = "  sl  local_address                         remote_address                        st
   0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1
";
        assert_eq!(listening_ports(v6), BTreeSet::from([8080]));
        assert!(listening_ports("").is_empty());
    }

    #[test]
    fn the_hosts_own_listeners_are_read() {
        // Our own namespace: a listener we open is seen.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let here = File::open("/proc/self/ns/net").unwrap();
        assert!(ports_listening_in(&here).unwrap().contains(&port));
    }
}
