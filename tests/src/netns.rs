use std::{
    ffi::OsStr,
    fs::File,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    thread,
};

use nix::sched::{CloneFlags, setns};

use crate::{Background, Error, Result};

/// Where `ip netns add` mounts named namespaces.
pub(crate) const NETNS_DIR: &str = "/run/netns";

/// A named network namespace, as `ip netns` knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(name: impl Into<String>) -> Netns {
        Netns { name: name.into() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// A command that runs `argv` inside this namespace (`ip netns exec`).
    pub fn command<I, S>(&self, argv: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(argv);
        cmd
    }

    /// Runs `argv` inside the namespace and returns its stdout; a non-zero
    /// exit is an error carrying stderr.
    pub fn run<I, S>(&self, argv: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let output = checked(&mut self.command(argv))?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `argv` inside the namespace and returns whether it succeeded,
    /// for commands expected to fail sometimes (a blocked ping).
    pub fn succeeds<I, S>(&self, argv: I) -> Result<bool>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = self.command(argv);
        Ok(output_of(&mut cmd)?.status.success())
    }

    /// Applies an nftables script inside the namespace (`nft -f -`, one
    /// transaction).
    pub fn nft(&self, script: &str) -> Result<()> {
        self.run_with_input(&["nft", "-f", "-"], script)
    }

    /// Runs `argv` inside the namespace with `input` on its stdin (a script
    /// for `nft -f -` or `ip -batch -`); a non-zero exit is an error that
    /// carries the input and stderr.
    pub fn run_with_input(&self, argv: &[&str], input: &str) -> Result<()> {
        let command = argv.join(" ");
        let mut child = self
            .command(argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Spawn {
                command: command.clone(),
                source,
            })?;
        child
            .stdin
            .take()
            .expect("stdin is piped")
            .write_all(input.as_bytes())
            .map_err(Error::io(format!("write the input of {command}")))?;
        let output = child
            .wait_with_output()
            .map_err(Error::io(format!("wait for {command}")))?;
        if output.status.success() {
            Ok(())
        } else {
            Err(Error::Command {
                command: format!("{command} <<EOF\n{input}EOF"),
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
            })
        }
    }

    /// The MAC address of interface `dev` in the namespace.
    pub fn mac(&self, dev: &str) -> Result<String> {
        let link = self.ip(["-o", "link", "show", dev])?;
        link.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(String::from)
            .ok_or_else(|| Error::Spec(format!("{}'s {dev} has no MAC: {link}", self.name)))
    }

    /// Runs `ip -n <ns> <args>`: iproute2 configuration of this namespace
    /// without entering it.
    pub fn ip<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args);
        let output = checked(&mut cmd)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts `argv` in the background inside the namespace, output appended
    /// to `log`. The process gets its own process group so Ctrl-C in a
    /// terminal does not reach it; the testbed stops it.
    pub fn spawn<I, S>(&self, argv: I, log: &Path) -> Result<Background>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        Background::spawn(self.command(argv), log)
    }

    /// Runs `f` on a thread that has entered this namespace, so sockets it
    /// opens live there. Other threads of the process are not affected.
    pub fn spawn_thread<F, R>(&self, f: F) -> Result<thread::JoinHandle<Result<R>>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let path = self.path();
        let ns = File::open(&path).map_err(Error::io(format!("open {}", path.display())))?;
        Ok(thread::spawn(move || {
            setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|errno| Error::Io {
                context: format!("setns into {}", path.display()),
                source: errno.into(),
            })?;
            Ok(f())
        }))
    }

    /// [`Netns::spawn_thread`] and wait for the result.
    pub fn in_thread<F, R>(&self, f: F) -> Result<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        self.spawn_thread(f)?
            .join()
            .map_err(|_| Error::ThreadPanicked(self.name.clone()))?
    }
}

fn describe(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    words.join(" ")
}

fn output_of(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: describe(cmd),
            source,
        })
}

/// Runs a command to completion; a non-zero exit becomes [`Error::Command`].
pub(crate) fn checked(cmd: &mut Command) -> Result<Output> {
    let output = output_of(cmd)?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            command: describe(cmd),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}
