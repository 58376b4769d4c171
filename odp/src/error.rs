use std::io;

/// Why bytes could not be read as an ODP message. Parsers return this for
/// every malformed input; they never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{what}: need {need} bytes, have {have}")]
    Short {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("attribute length {len} is invalid with {remaining} bytes left")]
    AttributeLength { len: usize, remaining: usize },
    #[error("{what}: expected {expected} bytes, got {got}")]
    Size {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{what}: {reason}")]
    Invalid { what: &'static str, reason: String },
}

/// Why an operation on the kernel datapath failed.
///
/// The router picks its data path from these: [`Error::ModuleNotLoaded`]
/// means "no fast datapath on this kernel", [`Error::PermissionDenied`]
/// means "run with CAP_NET_ADMIN", and [`Error::InvalidArgument`] is a bug
/// in what we sent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "the kernel has no Open vSwitch datapath (generic netlink family {family} is missing): \
         load it with `modprobe openvswitch`, or run without the fast datapath"
    )]
    ModuleNotLoaded { family: &'static str },
    #[error("permission denied by the kernel datapath: run as root or with CAP_NET_ADMIN")]
    PermissionDenied,
    #[error("the kernel datapath rejected the request as invalid (EINVAL): {context}")]
    InvalidArgument { context: String },
    #[error("{what} does not exist")]
    NotFound { what: String },
    #[error("{what} already exists")]
    AlreadyExists { what: String },
    #[error("the kernel datapath returned {cause} for {context}")]
    Kernel { context: String, cause: io::Error },
    #[error("netlink socket: {0}")]
    Socket(String),
    #[error("unreadable reply from the kernel datapath: {0}")]
    Decode(#[from] DecodeError),
}

impl Error {
    /// Maps an errno from a netlink error reply to the kinds callers act on.
    pub(crate) fn from_errno(errno: i32, context: impl Into<String>) -> Error {
        let context = context.into();
        match errno {
            libc::EPERM | libc::EACCES => Error::PermissionDenied,
            libc::EINVAL => Error::InvalidArgument { context },
            libc::ENOENT | libc::ENODEV => Error::NotFound { what: context },
            libc::EEXIST | libc::EBUSY => Error::AlreadyExists { what: context },
            _ => Error::Kernel {
                context,
                cause: io::Error::from_raw_os_error(errno),
            },
        }
    }
}
