use std::{
    fs::{self, OpenOptions},
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    thread,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::signal::{Signal, kill, killpg},
    unistd::Pid,
};

use crate::{Error, Result};

/// How long a stopped process may take to exit cleanly before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// A process running in the background inside a testbed namespace. Dropping
/// it stops it (SIGTERM, then SIGKILL), together with its process group.
#[derive(Debug)]
pub struct Background {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Background {
    pub(crate) fn spawn(mut cmd: Command, log: &Path) -> Result<Background> {
        if let Some(dir) = log.parent() {
            fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
        }
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(Error::io(format!("open log {}", log.display())))
        };
        cmd.stdin(Stdio::null())
            .stdout(open()?)
            .stderr(open()?)
            .process_group(0);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: format!("{cmd:?}"),
            source,
        })?;
        Ok(Background {
            pid: child.id(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process is still running (false once it has exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the process group at once, as a crash would (`kill -9`).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = killpg(pgid(self.pid), Signal::SIGKILL);
        child.wait().ok()
    }

    /// Stops the process: SIGTERM to its group, SIGKILL after a grace period.
    pub fn stop(mut self) -> Option<ExitStatus> {
        self.terminate()
    }

    /// Leaves the process running after this handle is gone (for the
    /// command line, which exits while the process goes on); returns its pid.
    pub fn detach(mut self) -> u32 {
        self.child = None;
        self.pid
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let mut status = None;
        terminate_group(self.pid, || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        status.or_else(|| child.wait().ok())
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn pgid(pid: u32) -> Pid {
    Pid::from_raw(pid as i32)
}

/// Stops a process group led by `pid`: SIGTERM, wait up to the grace period
/// for `exited` to say the leader is gone, then SIGKILL whatever is left of
/// the group (children the leader left behind included).
pub(crate) fn terminate_group(pid: u32, mut exited: impl FnMut() -> bool) {
    if killpg(pgid(pid), Signal::SIGTERM) == Err(Errno::ESRCH) {
        return;
    }
    let deadline = Instant::now() + STOP_GRACE;
    while !exited() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(pgid(pid), Signal::SIGKILL);
}

/// Stops a background process this process did not start (one the command
/// line detached earlier), by pid.
pub(crate) fn stop_detached(pid: u32) {
    terminate_group(pid, || kill(pgid(pid), None) == Err(Errno::ESRCH));
}
