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
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| Error::Spawn {
        command: command.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
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
    for applet in ["sh", "ping", "ip", "sleep", "cat", "nc", "hostname"] {
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

/// podman with its CNI backend, storage and configuration under `dir`.
pub struct Podman {
    dir: PathBuf,
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
        })
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("podman");
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
