use std::{io, path::PathBuf};

/// Why a testbed operation failed; every message says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "could not start `{command}`: {source} (is it installed? scripts/install-deps installs what the tests need)"
    )]
    Spawn { command: String, source: io::Error },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("invalid testbed: {0}")]
    Spec(String),
    #[error("no testbed named {0:?}; `weft-testbed list` shows the existing ones")]
    NoSuchTestbed(String),
    #[error("testbed {0:?} already exists; remove it with `weft-testbed destroy {0}`")]
    Exists(String),
    #[error(
        "no node {node:?} in testbed {testbed:?}; nodes are net, rt (with a hop), h<N> and h<N>c<M>"
    )]
    NoSuchNode { testbed: String, node: String },
    #[error(
        "binary {name:?} not found in {searched:?}; build it with `cargo build --workspace --bins` or set WEFT_BIN_DIR"
    )]
    MissingBinary {
        name: String,
        searched: Vec<PathBuf>,
    },
    #[error("testbed state {path}: {reason}")]
    State { path: PathBuf, reason: String },
    #[error("thread inside namespace {0} panicked")]
    ThreadPanicked(String),
    #[error("GET {path} from h{host}'s router: {source}")]
    Api {
        host: usize,
        path: String,
        source: weft_api::ClientError,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let context = context.into();
        move |source| Error::Io { context, source }
    }
}
