//! What a runtime hands the plugin: the command and container in the
//! environment, the network configuration on stdin.

use std::{collections::BTreeMap, path::PathBuf};

use serde::Deserialize;

use crate::error::{CniError, code};

/// The versions this plugin speaks. Results differ only in 0.3.x/0.4.0
/// carrying `"version": "4"` on each address.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];
/// The newest of them: what an answer is in when the runtime's version is
/// not one of them.
pub const NEWEST: &str = "1.1.0";

/// Where the router listens when the configuration does not say.
pub const DEFAULT_SOCKET: &str = "/run/weft/weft.sock";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    /// The first spec version that has this command.
    fn since(self) -> &'static str {
        match self {
            Command::Check => "0.4.0",
            Command::Status | Command::Gc => "1.1.0",
            _ => "0.3.0",
        }
    }
}

/// The `CNI_*` environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Env {
    pub command: Command,
    pub container_id: Option<String>,
    pub netns: Option<PathBuf>,
    pub ifname: Option<String>,
    /// The container's name, as the runtime tells it in `CNI_ARGS`
    /// (`K8S_POD_NAME`: Kubernetes' pod name, podman's container name).
    pub pod_name: Option<String>,
    /// The pod's namespace (`K8S_POD_NAMESPACE` in `CNI_ARGS`), which
    /// network policy selects by.
    pub pod_namespace: Option<String>,
}

/// The value of `key` in `CNI_ARGS` (`K1=V1;K2=V2`), if set and not empty.
pub fn cni_arg(args: &str, key: &str) -> Option<String> {
    args.split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Env {
    /// Reads the environment through `var`, so tests need not set the
    /// process's own.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Env, CniError> {
        let nonempty = |k: &str| var(k).filter(|v| !v.is_empty());
        let command = nonempty("CNI_COMMAND").ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "CNI_COMMAND is not set",
                "weft-cni is run by a container runtime (podman, containerd, CRI-O); to look at it by hand set CNI_COMMAND=VERSION",
            )
        })?;
        let command = Command::parse(&command).ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {command:?}"),
                "expected ADD, DEL, CHECK, VERSION, STATUS or GC",
            )
        })?;
        let ifname = nonempty("CNI_IFNAME");
        if let Some(name) = &ifname {
            check_ifname(name)?;
        }
        Ok(Env {
            command,
            container_id: nonempty("CNI_CONTAINERID"),
            netns: nonempty("CNI_NETNS").map(PathBuf::from),
            ifname,
            pod_name: nonempty("CNI_ARGS").and_then(|args| cni_arg(&args, "K8S_POD_NAME")),
            pod_namespace: nonempty("CNI_ARGS")
                .and_then(|args| cni_arg(&args, "K8S_POD_NAMESPACE")),
        })
    }

    /// The container's namespace, for commands that need it.
    pub fn require_netns(&self) -> Result<&std::path::Path, CniError> {
        self.netns.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                "CNI_NETNS is not set",
                format!("{:?} needs the container's network namespace", self.command),
            )
        })
    }

    /// A variable the command cannot do without.
    pub fn require<'a>(&self, name: &str, value: &'a Option<String>) -> Result<&'a str, CniError> {
        value.as_deref().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("{name} is not set"),
                format!("the runtime must set {name} for {:?}", self.command),
            )
        })
    }
}

/// An interface name the kernel takes: 1 to 15 bytes, no '/', ':' or
/// white space, not "." or "..". Anything else is the spec's "invalid
/// environment variables" (code 4), said before anything is made.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let bad = name.len() > 15
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace());
    if bad {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_IFNAME {name:?} is not a valid interface name"),
            "an interface name is 1 to 15 characters without '/', ':' or spaces",
        ));
    }
    Ok(())
}

/// One entry of `cni.dev/valid-attachments` (GC).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ValidAttachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// `args` of the network configuration, as the CNI conventions define it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ConfArgs {
    #[serde(default)]
    pub cni: CniConfArgs,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct CniConfArgs {
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// `{"key": "app", "value": "db"}`.
#[derive(Clone, Debug, Deserialize)]
pub struct Label {
    pub key: String,
    pub value: String,
}

impl NetConf {
    /// The labels as the router takes them, `key=value`; the router checks
    /// them and refuses the ADD with the reason if one is not a label.
    pub fn labels(&self) -> Vec<String> {
        self.args
            .cni
            .labels
            .iter()
            .map(|l| format!("{}={}", l.key, l.value))
            .collect()
    }
}

/// The `runtimeConfig` capabilities weft takes.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Static addresses (the `ips` capability), with or without a prefix
    /// length: the first IPv4 one is claimed in weft's IPAM.
    #[serde(default)]
    pub ips: Vec<String>,
}

impl RuntimeConfig {
    /// The static IPv4 address asked for, if any; anything unreadable is
    /// the runtime's error to hear.
    pub fn static_ipv4(&self) -> Result<Option<std::net::Ipv4Addr>, CniError> {
        for ip in &self.ips {
            let addr = ip.split('/').next().unwrap_or_default();
            match addr.parse::<std::net::IpAddr>() {
                Ok(std::net::IpAddr::V4(v4)) => return Ok(Some(v4)),
                Ok(std::net::IpAddr::V6(_)) => continue,
                Err(_) => {
                    return Err(CniError::new(
                        code::INVALID_CONFIG,
                        format!("runtimeConfig.ips has {ip:?}, which is not an address"),
                        "give addresses like 10.32.5.5 or 10.32.5.5/12",
                    ));
                }
            }
        }
        Ok(None)
    }
}

/// The network configuration, as one plugin of a conflist sees it.
#[derive(Clone, Debug, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The router's API socket.
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Where in weft's range containers of this network get addresses.
    #[serde(default)]
    pub subnet: Option<ipnet::Ipv4Net>,
    /// Passed through to the result for the runtime.
    #[serde(default)]
    pub dns: Option<serde_json::Value>,
    /// weft is its own IPAM; a delegated one is refused rather than
    /// ignored.
    #[serde(default)]
    pub ipam: Option<serde_json::Value>,
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Option<Vec<ValidAttachment>>,
    /// What the runtime passes for the capabilities weft declares.
    #[serde(rename = "runtimeConfig", default)]
    pub runtime_config: RuntimeConfig,
    /// The CNI conventions' `args` (`args.cni.labels`: the container's
    /// labels, which network policy selects by).
    #[serde(default)]
    pub args: ConfArgs,
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                code::DECODE_FAILURE,
                "cannot read the network configuration",
                e.to_string(),
            )
        })?;
        if conf.name.is_empty() {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                "the network configuration has no name",
                "set \"name\" in the conflist",
            ));
        }
        if let Some(kind) = conf.ipam.as_ref().and_then(|i| i.get("type")) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("unsupported field ipam.type = {kind}: weft-cni does not delegate IPAM"),
                "weft gives addresses from its own IPAM: remove the \"ipam\" section (use \"subnet\" to pick a part of the range)",
            ));
        }
        Ok(conf)
    }

    /// Refuses versions this plugin does not speak, and commands older
    /// versions do not have.
    pub fn check_version(&self, command: Command) -> Result<(), CniError> {
        if !SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("CNI version {} is not supported", self.cni_version),
                format!("weft-cni speaks {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        if version_key(&self.cni_version) < version_key(command.since()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("{command:?} needs CNI {} or later", command.since()),
                format!("the configuration says cniVersion {}", self.cni_version),
            ));
        }
        Ok(())
    }

    /// The router socket to talk to.
    pub fn socket(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
    }
}

/// Orders versions numerically ("0.10.0" after "0.4.0").
pub fn version_key(v: &str) -> Vec<u32> {
    v.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}
