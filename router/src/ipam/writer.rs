//! IPAM's disk commits, on a thread of their own: a commit waits for the
//! disk (an fsync, milliseconds or, on a busy disk, much longer), and the
//! router's event loop and the mesh must not wait with it.
//!
//! The agent's snapshots are numbered. Only the newest waiting one is
//! kept (a newer snapshot contains everything an older one had), so the
//! queue is bounded at one. The caller learns which number is on disk,
//! and holds back whatever depends on a newer one.

use std::{
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread,
    time::{Duration, Instant},
};

use tokio::sync::Notify;

use super::store::{Store, StoreError};

/// How long a failed commit waits before it is tried again, when no newer
/// snapshot came meanwhile.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Where snapshots go: the redb store, or a test's stand-in.
pub trait Save: Send + 'static {
    fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError>;
}

impl Save for Store {
    fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        Store::save(self, bytes)
    }
}

/// What the writer has done, as the caller sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The newest snapshot number on disk.
    pub stored: u64,
    /// Why the newest commit failed, while it fails.
    pub failing: Option<String>,
    /// The number of the snapshot whose commit failed last.
    pub failed: u64,
}

impl Progress {
    /// Why snapshot `number` is not on disk, if its commit (or a later
    /// one's) failed; `None` if it is stored or not tried yet.
    pub fn failure_of(&self, number: u64) -> Option<&str> {
        match &self.failing {
            Some(why) if self.stored < number && self.failed >= number => Some(why),
            _ => None,
        }
    }
}

#[derive(Default)]
struct Slot {
    next: Option<(u64, Vec<u8>)>,
    progress: Progress,
    stop: bool,
}

struct Inner {
    slot: Mutex<Slot>,
    wake: Condvar,
    /// Told after every commit, successful or not.
    done: Arc<Notify>,
}

impl Inner {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Handle on the commit thread; dropping it commits what waits, then ends
/// the thread.
pub struct Writer {
    inner: Arc<Inner>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts the thread; `stored` is the number of the snapshot already
    /// on disk.
    pub fn spawn(mut store: impl Save, stored: u64) -> std::io::Result<Writer> {
        let inner = Arc::new(Inner {
            slot: Mutex::new(Slot {
                progress: Progress {
                    stored,
                    ..Progress::default()
                },
                ..Slot::default()
            }),
            wake: Condvar::new(),
            done: Arc::new(Notify::new()),
        });
        let thread = {
            let inner = inner.clone();
            thread::Builder::new()
                .name("weft-ipam-store".into())
                .spawn(move || commit_loop(&inner, &mut store))?
        };
        Ok(Writer {
            inner,
            thread: Some(thread),
        })
    }

    /// Queues snapshot `number`, replacing an older one still waiting.
    pub fn submit(&self, number: u64, bytes: Vec<u8>) {
        self.inner.slot().next = Some((number, bytes));
        self.inner.wake.notify_one();
    }

    pub fn progress(&self) -> Progress {
        self.inner.slot().progress.clone()
    }

    /// Notified after each commit, to look at [`Writer::progress`] again.
    pub fn done(&self) -> Arc<Notify> {
        self.inner.done.clone()
    }

    /// Waits until snapshot `number` is on disk or its commit failed, at
    /// most `limit`; the progress then.
    pub fn wait_for(&self, number: u64, limit: Duration) -> Progress {
        let deadline = Instant::now() + limit;
        let mut slot = self.inner.slot();
        loop {
            let settled =
                slot.progress.stored >= number || slot.progress.failure_of(number).is_some();
            let now = Instant::now();
            if settled || now >= deadline {
                return slot.progress.clone();
            }
            slot = self
                .inner
                .wake
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.inner.slot().stop = true;
        self.inner.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn commit_loop(inner: &Inner, store: &mut impl Save) {
    let mut retry: Option<(u64, Vec<u8>)> = None;
    loop {
        let (number, bytes) = {
            let mut slot = inner.slot();
            loop {
                if let Some(next) = slot.next.take() {
                    break next;
                }
                if slot.stop {
                    // A failed snapshot is given one last try on the way out.
                    match retry.take() {
                        Some(failed) => break failed,
                        None => return,
                    }
                }
                let wait = if retry.is_some() {
                    RETRY_AFTER
                } else {
                    Duration::from_secs(3600)
                };
                let (guard, timeout) = inner
                    .wake
                    .wait_timeout(slot, wait)
                    .unwrap_or_else(PoisonError::into_inner);
                slot = guard;
                if timeout.timed_out()
                    && slot.next.is_none()
                    && let Some(failed) = retry.take()
                {
                    break failed;
                }
            }
        };
        let outcome = store.save(&bytes);
        {
            let mut slot = inner.slot();
            match outcome {
                Ok(()) => {
                    slot.progress.stored = slot.progress.stored.max(number);
                    slot.progress.failing = None;
                    retry = None;
                }
                Err(e) => {
                    slot.progress.failing = Some(e.to_string());
                    slot.progress.failed = number;
                    retry = Some((number, bytes));
                }
            }
            // Stopping: this was the last try.
            if slot.stop && slot.next.is_none() {
                inner.wake.notify_all();
                inner.done.notify_one();
                return;
            }
        }
        // Both kinds of waiter: the event loop and wait_for.
        inner.wake.notify_all();
        inner.done.notify_one();
    }
}

/// A store for tests that saves only when the test lets it.
#[cfg(test)]
pub(crate) mod testing {
    use std::sync::mpsc;

    use super::*;

    /// Saves when sent `true`, fails ("disk full") when sent `false`.
    pub(crate) struct Gated {
        go: mpsc::Receiver<bool>,
        saved: Saved,
    }

    impl Save for Gated {
        fn save(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
            if self.go.recv().unwrap_or(true) {
                self.saved.lock().unwrap().push(bytes.to_vec());
                Ok(())
            } else {
                Err(StoreError::Write {
                    path: "/test".into(),
                    detail: "disk full".into(),
                })
            }
        }
    }

    /// What a gated store saved, in order.
    pub(crate) type Saved = Arc<Mutex<Vec<Vec<u8>>>>;

    pub(crate) fn gated() -> (Writer, mpsc::Sender<bool>, Saved) {
        let (go, gate) = mpsc::channel();
        let saved = Arc::new(Mutex::new(Vec::new()));
        let store = Gated {
            go: gate,
            saved: saved.clone(),
        };
        (Writer::spawn(store, 0).unwrap(), go, saved)
    }
}

#[cfg(test)]
mod tests {
    use super::{testing::gated, *};

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn a_snapshot_counts_as_stored_only_once_committed() {
        let (writer, go, saved) = gated();
        writer.submit(1, b"one".to_vec());
        assert_eq!(writer.progress().stored, 0, "the disk has not answered");
        go.send(true).unwrap();
        assert_eq!(writer.wait_for(1, LONG).stored, 1);
        assert_eq!(*saved.lock().unwrap(), vec![b"one".to_vec()]);
    }

    #[test]
    fn only_the_newest_waiting_snapshot_is_written() {
        let (writer, go, saved) = gated();
        writer.submit(1, b"one".to_vec());
        // The thread holds 1 and waits at the gate; 2 and 3 queue behind.
        std::thread::sleep(Duration::from_millis(50));
        writer.submit(2, b"two".to_vec());
        writer.submit(3, b"three".to_vec());
        go.send(true).unwrap();
        go.send(true).unwrap();
        assert_eq!(writer.wait_for(3, LONG).stored, 3);
        let saved = saved.lock().unwrap().clone();
        assert_eq!(saved.last().unwrap(), b"three");
        assert!(!saved.contains(&b"two".to_vec()), "{saved:?}");
    }

    #[test]
    fn a_failed_commit_is_reported_and_tried_again() {
        let (writer, go, saved) = gated();
        writer.submit(1, b"one".to_vec());
        go.send(false).unwrap();
        let progress = writer.wait_for(1, LONG);
        assert_eq!(progress.stored, 0);
        assert!(
            progress
                .failing
                .as_deref()
                .is_some_and(|f| f.contains("disk full")),
            "{progress:?}"
        );
        // The disk has room again: the retry stores it, with no new submit.
        go.send(true).unwrap();
        let deadline = Instant::now() + LONG;
        while writer.progress().stored < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let progress = writer.progress();
        assert_eq!((progress.stored, progress.failing), (1, None));
        assert_eq!(*saved.lock().unwrap(), vec![b"one".to_vec()]);
    }

    #[test]
    fn a_failure_is_not_blamed_on_a_newer_snapshot() {
        let (writer, go, _) = gated();
        writer.submit(1, b"one".to_vec());
        go.send(false).unwrap();
        let progress = writer.wait_for(1, LONG);
        assert!(progress.failure_of(1).is_some());
        assert_eq!(progress.failure_of(2), None, "2 was not tried yet");
        writer.submit(2, b"two".to_vec());
        go.send(true).unwrap();
        let progress = writer.wait_for(2, LONG);
        assert_eq!((progress.stored, progress.failure_of(2)), (2, None));
    }

    #[test]
    fn dropping_the_writer_commits_what_waits() {
        let (writer, go, saved) = gated();
        go.send(true).unwrap();
        writer.submit(1, b"last".to_vec());
        drop(writer);
        assert_eq!(*saved.lock().unwrap(), vec![b"last".to_vec()]);
    }
}
