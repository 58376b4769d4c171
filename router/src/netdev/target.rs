//! What `weft attach` can attach: a named network namespace, a namespace
//! file, a process, or a Docker container.

use std::{fs::File, path::PathBuf, process::Command};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `ip netns` name, under /run/netns.
    Named(String),
    /// A namespace file such as /proc/1234/ns/net or a bind mount of one.
    Path(PathBuf),
    Pid(u32),
    Docker(String),
}

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(
        "{0:?} is not a network namespace name (ip netns list), a namespace path, a pid or a running Docker container"
    )]
    Unknown(String),
    #[error("cannot open the network namespace of {target}: {cause}")]
    Open {
        target: String,
        cause: std::io::Error,
    },
    #[error("Docker container {id}: {reason}")]
    Docker { id: String, reason: String },
}

const NETNS_DIR: &str = "/run/netns";

impl Target {
    /// Reads what the user typed, checking which kind of target it is.
    pub fn parse(s: &str) -> Result<Target, TargetError> {
        if let Ok(pid) = s.parse::<u32>() {
            return Ok(Target::Pid(pid));
        }
        if s.starts_with('/') {
            return Ok(Target::Path(PathBuf::from(s)));
        }
        if !s.contains('/') && std::path::Path::new(NETNS_DIR).join(s).exists() {
            return Ok(Target::Named(s.to_string()));
        }
        if docker_pid(s).is_ok() {
            return Ok(Target::Docker(s.to_string()));
        }
        Err(TargetError::Unknown(s.to_string()))
    }

    fn path(&self) -> Result<PathBuf, TargetError> {
        Ok(match self {
            Target::Named(n) => PathBuf::from(NETNS_DIR).join(n),
            Target::Path(p) => p.clone(),
            Target::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
            Target::Docker(id) => PathBuf::from(format!("/proc/{}/ns/net", docker_pid(id)?)),
        })
    }

    /// The namespace, open.
    pub fn open(&self) -> Result<File, TargetError> {
        let path = self.path()?;
        File::open(&path).map_err(|cause| TargetError::Open {
            target: self.to_string(),
            cause,
        })
    }

    /// A stable key for the attachment registry.
    pub fn key(&self) -> String {
        self.to_string()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Named(n) => write!(f, "{n}"),
            Target::Path(p) => write!(f, "{}", p.display()),
            Target::Pid(pid) => write!(f, "{pid}"),
            Target::Docker(id) => write!(f, "{id}"),
        }
    }
}

fn docker_pid(id: &str) -> Result<u32, TargetError> {
    let fail = |reason: String| TargetError::Docker {
        id: id.to_string(),
        reason,
    };
    let out = Command::new("docker")
        .args(["inspect", "--format", "{{.State.Pid}}", id])
        .output()
        .map_err(|e| fail(format!("cannot run docker: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    match String::from_utf8_lossy(&out.stdout).trim().parse::<u32>() {
        Ok(0) => Err(fail("is not running".into())),
        Ok(pid) => Ok(pid),
        Err(_) => Err(fail("docker inspect gave no pid".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_told_apart() {
        assert_eq!(Target::parse("1234").unwrap(), Target::Pid(1234));
        assert_eq!(
            Target::parse("/proc/1/ns/net").unwrap(),
            Target::Path("/proc/1/ns/net".into())
        );
        assert!(matches!(
            Target::parse("surely-no-such-namespace-or-container"),
            Err(TargetError::Unknown(_))
        ));
    }
}
