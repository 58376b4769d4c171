//! Real container runtimes for tests: podman with its CNI backend and
//! dockerd, each confined to a directory of the testbed's (storage,
//! configuration, sockets), and a busybox image made without a registry.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use crate::{Error, Result};

/// Runs `cmd`, returning stdout; a failure is an error with stderr.
pub fn output(mut cmd: Command) -> Result<String> {
    let out = crate::netns::checked(&mut cmd)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// A root filesystem tarball holding Debian's static busybox, which
/// `podman import` and `docker import` turn into an image in a second.
pub fn busybox_tar(dir: &Path) -> Result<PathBuf> {
    let busybox = Path::new("/bin/busybox");
    if !busybox.exists() {
        return Err(Error::Spec(
            "/bin/busybox is missing: install busybox-static (scripts/install-deps does)".into(),
        ));
    }
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).map_err(io("create rootfs"))?;
    std::fs::copy(busybox, root.join("bin/busybox")).map_err(io("copy busybox"))?;
    for applet in [
        "sh", "ping", "ip", "sleep", "cat", "nc", "hostname", "nslookup",
    ] {
        let link = root.join("bin").join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io("link applet"))?;
        }
    }
    let tar = dir.join("busybox.tar");
    let mut cmd = Command::new("tar");
    cmd.arg("-C").arg(&root).arg("-cf").arg(&tar).arg(".");
    output(cmd)?;
    Ok(tar)
}

/// podman with its CNI backend, storage and configuration under `dir`,
/// run in a simulated host's network namespace when given one (so that
/// what its plugins write, such as portmap's rules, is that host's).
pub struct Podman {
    dir: PathBuf,
    netns: Option<crate::Netns>,
}

impl Podman {
    /// Sets podman up to find CNI plugins in `cni_bin` and networks in
    /// `cni_conf`.
    pub fn new(dir: &Path, cni_bin: &Path, cni_conf: &Path) -> Result<Podman> {
        std::fs::create_dir_all(dir).map_err(io("create podman dir"))?;
        // runc, not crun: crun refuses this machine's hybrid cgroups.
        // Limits below what conmon may set here, as CAP_SYS_RESOURCE is
        // not ours to raise them.
        let containers = format!(
            "[containers]\ndefault_ulimits = [\"nofile=4096:4096\", \"nproc=16384:16384\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n\
             [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
            cni_bin.display(),
            cni_conf.display()
        );
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
            dir.join("storage").display(),
            dir.join("runroot").display()
        );
        std::fs::write(dir.join("containers.conf"), containers).map_err(io("containers.conf"))?;
        std::fs::write(dir.join("storage.conf"), storage).map_err(io("storage.conf"))?;
        Ok(Podman {
            dir: dir.to_path_buf(),
            netns: None,
        })
    }

    /// Runs podman inside `netns` (only that: `ip netns exec` would
    /// remount /sys and hide the cgroups podman needs).
    pub fn inside(mut self, netns: &crate::Netns) -> Podman {
        self.netns = Some(netns.clone());
        self
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.path().display()))
                    .arg("podman");
                c
            }
            None => Command::new("podman"),
        };
        cmd.args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"));
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Result<String> {
        output(self.command(args))
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self
            .command(&["rm", "--all", "--force", "--time", "0"])
            .output();
    }
}

/// dockerd inside a simulated host's network namespace (only that: `ip
/// netns exec` would remount /sys and hide the cgroup mounts dockerd
/// needs), with its data, state and API socket under `dir`.
pub struct Dockerd {
    dir: PathBuf,
    netns: crate::Netns,
    child: Option<std::process::Child>,
}

impl Dockerd {
    pub fn start(netns: &crate::Netns, dir: &Path) -> Result<Dockerd> {
        std::fs::create_dir_all(dir).map_err(io("create docker dir"))?;
        let mut d = Dockerd {
            dir: dir.to_path_buf(),
            netns: netns.clone(),
            child: None,
        };
        d.spawn()?;
        Ok(d)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("dockerd.log"))
            .map_err(io("dockerd log"))?;
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.netns.path().display()))
            .arg("dockerd")
            .arg("--data-root")
            .arg(self.dir.join("data"))
            .arg("--exec-root")
            .arg(self.dir.join("exec"))
            .arg("--pidfile")
            .arg(self.dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            // Nothing of the machine's own: no docker0, no iptables rules.
            .args(["--bridge", "none", "--iptables=false", "--ip6tables=false"])
            .args(["--ip-masq=false", "--live-restore"])
            .stdout(log.try_clone().map_err(io("dockerd log"))?)
            .stderr(log);
        let child = cmd.spawn().map_err(|source| Error::Spawn {
            command: "dockerd (install docker.io; scripts/install-deps does)".into(),
            source,
        })?;
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.docker(&["version"]).is_err() {
            if std::time::Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                return Err(Error::Spec(format!("dockerd did not come up: {tail:?}")));
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        Ok(())
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `docker ARGS` against this daemon, with Debian's client.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("/usr/bin/docker");
        cmd.arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args);
        output(cmd)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = child.wait();
        }
    }

    /// Stops dockerd and starts it again; with live restore its
    /// containers keep running meanwhile.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Ok(ids) = self.docker(&["ps", "-aq"]) {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = self.docker(&[&["rm", "-f"], &ids[..]].concat());
            }
        }
        self.stop();
        // dockerd leaves its data root bind-mounted on itself (and shm or
        // netns mounts of containers killed with it): unmount all of it,
        // or the testbed's directory cannot be removed.
        crate::testbed::unmount_under(&self.dir);
    }
}
