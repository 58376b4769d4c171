//! Which containers have a Synthetic Network door open: a loopback port
//! of their own on which weft answers Synthetic Network's API (and
//! serves its page from a directory the user names), so its JavaScript
//! client and page, which only know an address and always ask for bare
//! `/qos` and `/top/...`, drive one container's conditions unchanged.
//!
//! Kept in `synthetic-network.json` beside conditions.json, so a door
//! opens again on the same port after a restart; a door closes when its
//! container leaves, as its conditions do. The serving itself is the
//! API's (`api::synthetic`); this is the book of who has which door.

use std::{collections::BTreeMap, path::PathBuf, sync::Mutex};

use serde::{Deserialize, Serialize};

/// The doors' file, in the data directory beside conditions.json.
pub const FILE: &str = "synthetic-network.json";

/// One container's door, as asked for and stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DoorSetting {
    /// The loopback port (127.0.0.1) it listens on.
    pub port: u16,
    /// Synthetic Network's page (its `frontend/client` directory), served
    /// on the door; none: the API alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<PathBuf>,
}

/// What the API says about an open door.
#[derive(Debug, Serialize, Deserialize)]
pub struct DoorInfo {
    pub id: String,
    pub port: u16,
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ui: Option<PathBuf>,
}

impl DoorInfo {
    pub fn new(id: &str, setting: DoorSetting) -> DoorInfo {
        DoorInfo {
            id: id.to_string(),
            port: setting.port,
            url: format!("http://127.0.0.1:{}/", setting.port),
            ui: setting.ui,
        }
    }
}

/// synthetic-network.json: the doors by container id.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredDoors {
    pub doors: BTreeMap<String, DoorSetting>,
}

pub(crate) fn encode_doors(stored: &StoredDoors) -> Vec<u8> {
    serde_json::to_vec_pretty(stored).expect("doors serialise")
}

pub(crate) fn decode_doors(bytes: &[u8]) -> Result<StoredDoors, String> {
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

struct Open {
    setting: DoorSetting,
    /// The listener's task; aborting it closes the port once it ends.
    task: tokio::task::JoinHandle<()>,
}

/// The open doors and their file.
pub struct Doors {
    file: PathBuf,
    /// Held only for map and file updates, never across an await.
    open: Mutex<BTreeMap<String, Open>>,
    /// Read at start, until [`Doors::to_restore`] takes it.
    stored: Mutex<StoredDoors>,
}

impl Doors {
    /// Reads `file` (absent: no doors).
    pub fn load(file: PathBuf) -> Result<Doors, super::ConditionError> {
        let stored = super::read_state(&file, decode_doors)?;
        Ok(Doors {
            file,
            open: Mutex::new(BTreeMap::new()),
            stored: Mutex::new(stored),
        })
    }

    /// The doors stored by the last router, once.
    pub fn to_restore(&self) -> BTreeMap<String, DoorSetting> {
        std::mem::take(&mut self.stored.lock().expect("doors lock").doors)
    }

    fn save(&self, open: &BTreeMap<String, Open>) -> Result<(), super::ConditionError> {
        let stored = StoredDoors {
            doors: open
                .iter()
                .map(|(id, o)| (id.clone(), o.setting.clone()))
                .collect(),
        };
        super::write_state(&self.file, &encode_doors(&stored))
    }

    /// Records `id`'s door, serving as `task`, closing the one it had
    /// (whose task it returns, ending). All or nothing: if the file
    /// cannot be written the new door is closed and the old one stays.
    pub fn insert(
        &self,
        id: &str,
        setting: DoorSetting,
        task: tokio::task::JoinHandle<()>,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, super::ConditionError> {
        let mut open = self.open.lock().expect("doors lock");
        let old = open.insert(id.to_string(), Open { setting, task });
        if let Err(e) = self.save(&open) {
            if let Some(new) = open.remove(id) {
                new.task.abort();
            }
            if let Some(old) = old {
                open.insert(id.to_string(), old);
            }
            return Err(e);
        }
        Ok(old.map(|old| {
            old.task.abort();
            old.task
        }))
    }

    /// Closes `id`'s door; its listener's task, ending (awaited, the
    /// port is free again), if it had one.
    pub fn close(
        &self,
        id: &str,
    ) -> Result<Option<tokio::task::JoinHandle<()>>, super::ConditionError> {
        self.keep(|other| other != id)
            .map(|mut closed| closed.pop())
    }

    /// Closes the doors of containers `keep` refuses; their listeners'
    /// tasks, ending.
    pub fn keep(
        &self,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<tokio::task::JoinHandle<()>>, super::ConditionError> {
        let mut open = self.open.lock().expect("doors lock");
        let gone: Vec<String> = open.keys().filter(|id| !keep(id)).cloned().collect();
        if gone.is_empty() {
            return Ok(Vec::new());
        }
        let mut ending = Vec::with_capacity(gone.len());
        for id in &gone {
            if let Some(o) = open.remove(id) {
                tracing::info!(container = %id, port = o.setting.port, "its Synthetic Network door closes");
                o.task.abort();
                ending.push(o.task);
            }
        }
        self.save(&open)?;
        Ok(ending)
    }

    /// The open doors, by container.
    pub fn list(&self) -> BTreeMap<String, DoorSetting> {
        let open = self.open.lock().expect("doors lock");
        open.iter()
            .map(|(id, o)| (id.clone(), o.setting.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "weft-doors-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[tokio::test]
    async fn doors_are_stored_replaced_and_closed() {
        let d = dir();
        let file = d.join("synthetic-network.json");
        let doors = Doors::load(file.clone()).unwrap();
        let idle = || tokio::spawn(std::future::pending::<()>());
        let first = idle();
        let setting = DoorSetting {
            port: 40123,
            ui: Some("/opt/sn/frontend/client".into()),
        };
        assert!(
            doors
                .insert("web", setting.clone(), first)
                .unwrap()
                .is_none()
        );
        assert_eq!(doors.list().get("web"), Some(&setting));
        // A new door for the same container closes the old one.
        let second = idle();
        let plain = DoorSetting {
            port: 40124,
            ui: None,
        };
        let first = doors.insert("web", plain.clone(), second).unwrap();
        assert!(first.unwrap().await.unwrap_err().is_cancelled());
        let again = Doors::load(file.clone()).unwrap().to_restore();
        assert_eq!(again, BTreeMap::from([("web".to_string(), plain)]));
        // Its container leaves: the door closes and the file says so.
        let mut closed = doors.keep(|id| id != "web").unwrap();
        assert_eq!(closed.len(), 1);
        assert!(closed.pop().unwrap().await.unwrap_err().is_cancelled());
        assert!(Doors::load(file).unwrap().to_restore().is_empty());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[tokio::test]
    async fn a_door_that_cannot_be_stored_is_not_opened() {
        let d = dir();
        // The file's directory is missing: nothing can be written.
        let doors = Doors::load(d.join("gone").join("synthetic-network.json")).unwrap();
        let task = tokio::spawn(std::future::pending::<()>());
        let watch = task.abort_handle();
        let setting = DoorSetting {
            port: 40125,
            ui: None,
        };
        assert!(doors.insert("web", setting, task).is_err());
        assert!(doors.list().is_empty());
        // Its task was stopped: the port is not held.
        for _ in 0..100 {
            if watch.is_finished() {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(watch.is_finished());
        std::fs::remove_dir_all(d).unwrap();
    }
}
