//! The log of a router started by `weft launch`: appended to across
//! restarts (a crashed router's last words stay), and kept under a size
//! cap by rotation, `weft.log` → `weft.log.1` → `weft.log.2`.
//!
//! The router's output (tracing, and a panic's message) goes to its
//! stdout and stderr, which `weft launch` points at the file; rotating
//! renames the file and points both at a fresh one.

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    time::Duration,
};

/// The environment variable through which `weft launch` names the file.
pub const ENV: &str = "WEFT_LOG_FILE";
/// Past this the log is rotated.
pub const CAP: u64 = 10 << 20;
/// Rotated files kept beside the live one.
const KEEP: usize = 2;
const CHECK_EVERY: Duration = Duration::from_secs(30);

fn rotated(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// Opens the log for appending, rotating it first if it is over `cap`.
pub fn open(path: &Path, cap: u64) -> std::io::Result<File> {
    if std::fs::metadata(path).is_ok_and(|m| m.len() > cap) {
        rotate(path)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// Shifts `path` to `path.1` (and that to `path.2`; the oldest goes).
fn rotate(path: &Path) -> std::io::Result<()> {
    for n in (1..KEEP).rev() {
        let from = rotated(path, n);
        if from.exists() {
            std::fs::rename(&from, rotated(path, n + 1))?;
        }
    }
    std::fs::rename(path, rotated(path, 1))
}

/// Keeps the router's own log under the cap while it runs: every
/// [`CHECK_EVERY`], a log over [`CAP`] is rotated and stdout and stderr
/// are pointed at the fresh file.
pub async fn keep(path: PathBuf) {
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    loop {
        ticker.tick().await;
        if !std::fs::metadata(&path).is_ok_and(|m| m.len() > CAP) {
            continue;
        }
        let fresh = open(&path, CAP).and_then(|file| {
            nix::unistd::dup2_stdout(&file)?;
            nix::unistd::dup2_stderr(&file)?;
            Ok(())
        });
        match fresh {
            Ok(()) => tracing::info!(log = %path.display(), "log rotated"),
            Err(e) => tracing::warn!(log = %path.display(), error = %e, "cannot rotate the log"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn the_log_is_appended_to_and_rotated_past_the_cap() {
        let dir = std::env::temp_dir().join(format!("weft-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("weft.log");
        for round in 0..4 {
            let mut f = open(&path, 100).unwrap();
            writeln!(f, "{}", format!("run {round} ").repeat(20)).unwrap();
        }
        // Each run over the cap of 100 bytes pushed the last one aside.
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(live.starts_with("run 3"), "{live}");
        let one = std::fs::read_to_string(rotated(&path, 1)).unwrap();
        assert!(one.starts_with("run 2"), "{one}");
        let two = std::fs::read_to_string(rotated(&path, 2)).unwrap();
        assert!(two.starts_with("run 1"), "{two}");
        assert!(!rotated(&path, 3).exists(), "only two are kept");
        // Under the cap, runs append.
        let mut f = open(&path, 10_000).unwrap();
        writeln!(f, "run 4").unwrap();
        let live = std::fs::read_to_string(&path).unwrap();
        assert!(
            live.starts_with("run 3") && live.ends_with("run 4\n"),
            "{live}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
