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
        vec![self.name_file(), self.data_dir.join("attachments.json")]
    }
}

/// Reads a pid file; `None` if missing or unreadable.
pub fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}
