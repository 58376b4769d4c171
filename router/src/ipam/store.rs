//! IPAM's state on disk: one redb file holding the agent's snapshot,
//! replaced in one transaction at a time.

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use redb::TableDefinition;

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("ipam");
const KEY: &str = "state";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the IPAM state in {path} is unreadable ({detail}). weft will not start over silently: that could hand out addresses containers still use. Move the file aside and relaunch with --recover-ipam, which rebuilds this router's holdings from the containers attached here before anything is handed out"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write the IPAM state to {path}: {detail}")]
    Write { path: PathBuf, detail: String },
    #[error(
        "the IPAM state in {path} is missing or empty, but containers on this host use {} address(es) of the range ({}). weft will not start over: it would hand them out again. If the file was lost, relaunch with --recover-ipam to rebuild this router's holdings from them before anything is handed out",
        in_use.len(),
        in_use.iter().map(|(owner, a)| format!("{a} by {owner}")).collect::<Vec<_>>().join(", ")
    )]
    Lost {
        path: PathBuf,
        in_use: Vec<(String, Ipv4Addr)>,
    },
    #[error(
        "--recover-ipam: the IPAM state in {0} is there and readable; there is nothing to recover (launch without the flag)"
    )]
    NothingToRecover(PathBuf),
}

/// Runs `f`, turning a panic into an error: redb asserts on some damaged
/// files instead of returning an error, and a damaged file must be a
/// clear refusal, not a backtrace. The panic message is not printed.
fn without_panics<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    // One hook for the whole process, installed once, that stays quiet on
    // the thread inside here: swapping hooks would race with other
    // threads' panics (and lose their messages).
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    thread_local! {
        static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "the file is damaged".into())
    })
}

/// The agent's snapshot in a redb file: one key, replaced in a
/// transaction, so a crash leaves the old state or the new, never half.
pub struct Store {
    /// `None` between a failed write and a successful reopening.
    db: Option<redb::Database>,
    path: PathBuf,
}

impl Store {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file (making it if missing) and reads the snapshot in it.
    pub fn open(path: &Path) -> Result<(Store, Option<Vec<u8>>), StoreError> {
        let corrupt = |detail: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let opened = without_panics(|| {
            let db = redb::Database::create(path).map_err(|e| e.to_string())?;
            let store = Store {
                db: Some(db),
                path: path.to_path_buf(),
            };
            let snapshot = store.load().map_err(|e| e.to_string())?;
            Ok::<_, String>((store, snapshot))
        });
        opened.map_err(corrupt)?.map_err(corrupt)
    }

    fn load(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let corrupt = |e: &dyn std::fmt::Display| StoreError::Corrupt {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| corrupt(&"the file is not open"))?;
        let txn = db.begin_read().map_err(|e| corrupt(&e))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(corrupt(&e)),
        };
        let value = table.get(KEY).map_err(|e| corrupt(&e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Replaces the snapshot in one transaction. After an I/O error redb
    /// refuses every later write until the file is opened again (a full
    /// disk would stop IPAM for good), so a failed write reopens the file
    /// and tries once more.
    pub fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let first = match self.write(bytes) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        // Closed first: redb locks the file while it is open.
        self.db = None;
        self.db = without_panics(|| redb::Database::create(&self.path))
            .ok()
            .and_then(Result::ok);
        match self.db {
            Some(_) => self.write(bytes),
            None => Err(first),
        }
    }

    fn write(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let failed = |e: &dyn std::fmt::Display| StoreError::Write {
            path: self.path.clone(),
            detail: e.to_string(),
        };
        let db = self
            .db
            .as_ref()
            .ok_or_else(|| failed(&"the file could not be opened again"))?;
        let txn = db.begin_write().map_err(|e| failed(&e))?;
        {
            let mut table = txn.open_table(TABLE).map_err(|e| failed(&e))?;
            table.insert(KEY, bytes).map_err(|e| failed(&e))?;
        }
        txn.commit().map_err(|e| failed(&e))
    }
}
