//! The files a router keeps: state in the data directory, sockets and the
//! pid file in the run directory.

use std::path::{Path, PathBuf};

use crate::cli::args::DirArgs;

#[derive(Clone, Debug)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
}

impl Paths {
    pub fn new(dirs: &DirArgs) -> Paths {
        Paths {
            data_dir: dirs.data_dir.clone(),
            run_dir: dirs.run_dir.clone(),
        }
    }

    /// The API's unix socket, which the command line talks to.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("weft.sock")
    }

    /// The token a change over the TCP API must carry (root reads it).
    pub fn token_file(&self) -> PathBuf {
        self.run_dir.join("api-token")
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("weft.pid")
    }

    /// Where `weft launch` sends the background router's output.
    pub fn log_file(&self) -> PathBuf {
        self.run_dir.join("weft.log")
    }

    /// The persisted peer name.
    pub fn name_file(&self) -> PathBuf {
        self.data_dir.join("peer-name")
    }

    /// Everything `weft reset` removes from the data directory.
    pub fn state_files(&self) -> Vec<PathBuf> {
        vec![
            self.name_file(),
            self.data_dir.join("attachments.json"),
            self.ipam_file(),
            self.gateway_file(),
            self.peers_file(),
            self.conditions_file(),
            self.data_dir.join(crate::condition::doors::FILE),
        ]
    }

    /// The peers remembered across restarts.
    pub fn peers_file(&self) -> PathBuf {
        self.data_dir.join("peers.json")
    }

    /// The host's addresses on the bridge (`weft expose`).
    pub fn gateway_file(&self) -> PathBuf {
        self.data_dir.join("gateway.json")
    }

    /// IPAM's ring and this host's allocations.
    pub fn ipam_file(&self) -> PathBuf {
        self.data_dir.join("ipam.redb")
    }

    /// The names registered on this host.
    pub fn names_file(&self) -> PathBuf {
        self.data_dir.join("names.json")
    }

    pub fn policy_file(&self) -> PathBuf {
        self.data_dir.join("policy.json")
    }

    /// The conditions of this host's containers.
    pub fn conditions_file(&self) -> PathBuf {
        self.data_dir.join("conditions.json")
    }
}

/// Reads a pid file; `None` if missing or unreadable.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether process `pid` is running. A process that has exited but that no
/// one reaped yet (its parent is an init that does not reap, as in some
/// containers and VMs) still answers signals: it is a zombie, and gone for
/// our purposes.
pub fn process_running(pid: i32) -> bool {
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        })
        .is_some_and(|state| state == 'Z');
    !zombie && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}
