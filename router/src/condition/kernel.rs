//! The kernel's token buckets for a container whose conditions are a
//! shaped rate alone (`weft_condition::kernel`): `tbf` as the root qdisc
//! of the host's end of its veth (towards it) and of its own interface
//! in its namespace (from it), written with `tc`.

use std::{fs::File, os::fd::AsRawFd as _, process::Stdio};

use weft_condition::kernel::{KernelShaping, Tbf};

use crate::netdev::{attach::Attachment, target::Target};

#[derive(Debug, thiserror::Error)]
pub enum TcError {
    #[error("tc is not installed: install iproute2 (apt-get install iproute2)")]
    Missing,
    #[error("cannot open the container's network namespace: {0}")]
    Namespace(String),
    #[error("tc {args}: {cause}")]
    Refused { args: String, cause: String },
}

/// Runs `tc ARGS`, in the network namespace `netns` if given.
async fn tc(netns: Option<&File>, args: &[String]) -> Result<(), TcError> {
    let mut command = crate::sbin::command("tc");
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(ns) = netns {
        let fd = ns.as_raw_fd();
        // SAFETY: between fork and exec only setns, which is
        // async-signal-safe, runs; the descriptor outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = command.output().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => TcError::Missing,
        _ => TcError::Refused {
            args: args.join(" "),
            cause: e.to_string(),
        },
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(TcError::Refused {
            args: args.join(" "),
            cause: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Puts `tbf` on `dev`, or takes weft's off it (back to the default
/// root qdisc; nothing to take off is no error).
async fn put(netns: Option<&File>, dev: &str, tbf: Option<Tbf>) -> Result<(), TcError> {
    match tbf {
        Some(t) => tc(netns, &t.tc_args("replace", dev)).await,
        None => {
            let args: Vec<String> = ["qdisc", "del", "dev", dev, "root"]
                .into_iter()
                .map(String::from)
                .collect();
            match tc(netns, &args).await {
                Err(TcError::Refused { cause, .. })
                    if cause.contains("No such file")
                        || cause.contains("Cannot delete qdisc with handle of zero") =>
                {
                    Ok(())
                }
                other => other,
            }
        }
    }
}

/// Lets the kernel's buckets on `a` send what they queue before they go:
/// the same buckets at a rate no veth reaches empty at once (a change of
/// rate keeps the queue), then a moment for the last frames to leave.
pub async fn drain(a: &Attachment) -> Result<(), TcError> {
    let open = Tbf {
        rate: 1_000_000_000_000,
        limit: 256 << 20,
        burst: 256 << 20,
    };
    let netns = open_netns(a)?;
    for (ns, dev) in [(None, &a.interface), (Some(&netns), &a.container_interface)] {
        // Only where weft's bucket is: `change` fails on anything else.
        let _ = tc(ns, &open.tc_args("change", dev)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    Ok(())
}

fn open_netns(a: &Attachment) -> Result<File, TcError> {
    Target::parse(&a.target)
        .map_err(|e| TcError::Namespace(e.to_string()))?
        .open()
        .map_err(|e| TcError::Namespace(e.to_string()))
}

/// Applies `shaping` to container `a` (both ends; `default()`: none).
pub async fn apply(a: &Attachment, shaping: KernelShaping) -> Result<(), TcError> {
    let netns = open_netns(a)?;
    put(None, &a.interface, shaping.ingress).await?;
    put(Some(&netns), &a.container_interface, shaping.egress).await
}
