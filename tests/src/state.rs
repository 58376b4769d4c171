use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{BlockRule, Error, Result, Spec};

/// Per-testbed state, on tmpfs like `/run/netns`, so a reboot clears both.
pub(crate) const STATE_ROOT: &str = "/run/weft-testbed";

/// What a testbed is, kept on disk so the command line, a reaper or `gc` can
/// act on a testbed some other process created.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct State {
    pub name: String,
    pub spec: Spec,
    /// The process whose lifetime bounds the testbed; `None` for testbeds
    /// made by hand, which live until destroyed.
    pub owner_pid: Option<u32>,
    pub blocks: Vec<BlockRule>,
}

pub(crate) fn dir(name: &str) -> PathBuf {
    Path::new(STATE_ROOT).join(name)
}

impl State {
    fn file(name: &str) -> PathBuf {
        dir(name).join("state.json")
    }

    pub fn load(name: &str) -> Result<State> {
        let path = State::file(name);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchTestbed(name.to_string()));
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map_err(|e| Error::State {
            path,
            reason: format!("{e}; remove it with `weft-testbed destroy {name}`"),
        })
    }

    /// Writes the state atomically (temporary file, then rename), so a
    /// reader never sees half a file.
    pub fn save(&self) -> Result<()> {
        let path = State::file(&self.name);
        let dir = dir(&self.name);
        fs::create_dir_all(&dir).map_err(Error::io(format!("create {}", dir.display())))?;
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).expect("state serializes");
        fs::write(&tmp, text).map_err(Error::io(format!("write {}", tmp.display())))?;
        fs::rename(&tmp, &path).map_err(Error::io(format!("rename to {}", path.display())))
    }
}
