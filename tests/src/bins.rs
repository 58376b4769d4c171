use std::{env, path::PathBuf};

use crate::{Error, Result};

/// Finds a binary of this workspace (`weft`, `weft-cni`, `weft-testbed`).
///
/// Tests run from `target/<profile>/deps/`, binaries sit in
/// `target/<profile>/`, so the search walks up from the running executable.
/// `WEFT_BIN_DIR` overrides it, e.g. to test an installed build.
pub fn workspace_bin(name: &str) -> Result<PathBuf> {
    let mut searched = Vec::new();
    if let Some(dir) = env::var_os("WEFT_BIN_DIR") {
        searched.push(PathBuf::from(dir));
    } else if let Ok(exe) = env::current_exe() {
        searched.extend(exe.ancestors().skip(1).take(2).map(PathBuf::from));
    }
    searched
        .iter()
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::MissingBinary {
            name: name.to_string(),
            searched,
        })
}
