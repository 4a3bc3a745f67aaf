//! The state directory: what a [`LocalHub`](crate::local_hub::LocalHub) started with
//! [`state_dir`](crate::local_hub::LocalHubBuilder::state_dir) keeps across restarts.
//!
//! It keeps the CA and its key (the server certificate is made again from them at each start),
//! the hub's name, ports and policy keys, devices, modules and twins, each device's queued
//! cloud-to-device messages with their delivery counts, pending feedback records, and the
//! retained telemetry. A C2D lock is not kept: a message that was delivered but not completed
//! when the hub stopped is delivered again after the restart (with the same delivery count,
//! as when a lock runs out).
//!
//! # Format and crash safety
//!
//! The store is a map of keys to JSON values held in two files ([`journal`]): a snapshot
//! replaced by write-then-rename, and an fsync'd append-only journal of idempotent changes
//! since. We chose this over an embedded database: the hub already holds its whole state in
//! memory, so the store only needs ordered, durable appends and a way to start from a
//! compact file; it adds no dependency (redb would add a crate and its build time, SQLite a
//! C toolchain), and the files are plain JSON lines a user can read.
//!
//! # Cost and ordering
//!
//! [`HubState`](crate::local_hub::state::HubState) calls the store at its mutation points
//! while it holds its lock: the call only appends the change to an in-memory list, so changes
//! are recorded in the order the state took them. One writer thread takes everything recorded,
//! appends it, fsyncs once (group commit) and publishes how far it got. Whoever must not
//! answer before a change is durable — the AMQP C2D send before `accepted`, the MQTT PUBACK of
//! telemetry — awaits [`Store::durable`] after releasing the hub's lock. Without a state
//! directory the hub has no `Store` at all and each hook is one `OnceLock` check.

mod journal;
pub(crate) mod records;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};
use crate::protocol::FeedbackRecord;

pub(crate) use journal::Change;
use journal::Journal;

/// How far the writer got.
#[derive(Clone, Debug, Default)]
struct Committed {
    /// Changes up to this sequence number are durable.
    seq: u64,
    /// Set when a write failed: nothing after it is durable.
    failure: Option<String>,
    /// Set when the writer stopped (the hub stopped): nothing after it is durable.
    closed: bool,
}

/// What the hooks wrote last, per kind, so that each hook writes only what changed.
#[derive(Default)]
pub(crate) struct Mirror {
    /// Each device's stored C2D messages: token -> delivery count.
    pub queues: HashMap<String, BTreeMap<u64, u32>>,
    /// Stored feedback records by their key number.
    pub feedback: BTreeMap<u64, FeedbackRecord>,
    /// The number of the next feedback record.
    pub next_feedback: u64,
}

struct Pending {
    changes: Vec<Change>,
    /// The sequence number of the last recorded change.
    recorded: u64,
    closing: bool,
    mirror: Mirror,
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Condvar,
    committed: watch::Sender<Committed>,
    /// For waiters without a runtime (the synchronous `LocalHub` calls).
    committed_sync: (Mutex<Committed>, Condvar),
}

/// A handle on the state directory's writer.
#[derive(Clone)]
pub(crate) struct Store {
    shared: Arc<Shared>,
    dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

fn store_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Transport,
        format!(
            "the state directory {} cannot be used: {e}; check its permissions and free space, \
             or start without --state-dir",
            dir.display()
        ),
    )
}

impl Store {
    /// Opens `dir` (creating it), returning the store and what the directory held.
    pub fn open(dir: &Path) -> Result<(Store, BTreeMap<String, String>)> {
        let mut journal = Journal::open(dir).map_err(|e| store_error(dir, e))?;
        let loaded = std::mem::take(&mut journal.map);
        journal.map = loaded.clone();
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                changes: Vec::new(),
                recorded: 0,
                closing: false,
                mirror: Mirror::default(),
            }),
            wake: Condvar::new(),
            committed: watch::channel(Committed::default()).0,
            committed_sync: (Mutex::new(Committed::default()), Condvar::new()),
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("iothub-local-store".into())
            .spawn(move || write_loop(&writer, journal))
            .map_err(|e| store_error(dir, e))?;
        Ok((
            Store {
                shared,
                dir: dir.to_owned(),
            },
            loaded,
        ))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Records changes (in order) and the mirror's update, without waiting.
    pub fn record(&self, update: impl FnOnce(&mut Mirror, &mut Vec<Change>)) {
        let mut pending = self.pending();
        let before = pending.changes.len();
        let Pending {
            changes, mirror, ..
        } = &mut *pending;
        update(mirror, changes);
        let added = (pending.changes.len() - before) as u64;
        if added > 0 {
            pending.recorded += added;
            drop(pending);
            self.shared.wake.notify_one();
        }
    }

    /// Puts one value.
    pub fn put(&self, key: String, value: String) {
        self.record(|_, changes| changes.push(Change::Put { key, value }));
    }

    /// The sequence number of the last change recorded so far.
    fn recorded(&self) -> u64 {
        self.pending().recorded
    }

    /// Waits until every change recorded so far is durable.
    pub async fn durable(&self) -> Result<()> {
        let target = self.recorded();
        let mut rx = self.shared.committed.subscribe();
        let committed = rx
            .wait_for(|c| c.seq >= target || c.failure.is_some() || c.closed)
            .await
            .map_err(|_| store_error(&self.dir, "the writer stopped"))?
            .clone();
        self.outcome(committed, target)
    }

    /// [`Store::durable`] for callers outside a runtime's tasks (it blocks the thread).
    pub fn durable_blocking(&self) -> Result<()> {
        let target = self.recorded();
        let (lock, cv) = &self.shared.committed_sync;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let guard = cv
            .wait_while(guard, |c| {
                c.seq < target && c.failure.is_none() && !c.closed
            })
            .unwrap_or_else(|e| e.into_inner());
        self.outcome(guard.clone(), target)
    }

    fn outcome(&self, committed: Committed, target: u64) -> Result<()> {
        if committed.seq >= target {
            return Ok(());
        }
        let why = committed
            .failure
            .unwrap_or_else(|| "the hub stopped before the change was written".to_owned());
        Err(store_error(&self.dir, why))
    }

    /// Writes what is recorded and stops the writer; waits (5 s at most) until it has, so that
    /// the directory can be opened again at once.
    pub fn close(&self) {
        self.pending().closing = true;
        self.shared.wake.notify_one();
        let (lock, cv) = &self.shared.committed_sync;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv.wait_timeout_while(guard, std::time::Duration::from_secs(5), |c| !c.closed);
    }
}

fn publish(shared: &Shared, committed: Committed) {
    {
        let (lock, cv) = &shared.committed_sync;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = committed.clone();
        cv.notify_all();
    }
    shared.committed.send_replace(committed);
}

/// The writer thread: group commits until closed.
fn write_loop(shared: &Shared, mut journal: Journal) {
    let mut committed = Committed::default();
    loop {
        let (changes, recorded, closing) = {
            let guard = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            let mut guard = shared
                .wake
                .wait_while(guard, |p| p.changes.is_empty() && !p.closing)
                .unwrap_or_else(|e| e.into_inner());
            (
                std::mem::take(&mut guard.changes),
                guard.recorded,
                guard.closing,
            )
        };
        if !changes.is_empty() && committed.failure.is_none() {
            match journal.commit(changes) {
                Ok(()) => committed.seq = recorded,
                Err(e) => {
                    tracing::error!(error = %e, "the state directory cannot be written: later changes are not kept");
                    committed.failure = Some(e.to_string());
                }
            }
            publish(shared, committed.clone());
        }
        if closing {
            committed.closed = true;
            publish(shared, committed);
            return;
        }
    }
}

/// `component` made safe inside a key: `/` and `%` are escaped, so that `/` separates.
pub(crate) fn key_part(component: &str) -> String {
    component.replace('%', "%25").replace('/', "%2F")
}

/// The inverse of [`key_part`].
pub(crate) fn from_key_part(part: &str) -> String {
    part.replace("%2F", "/").replace("%25", "%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn recorded_changes_become_durable_in_order_and_reload() {
        let dir = std::env::temp_dir().join(format!("iothub-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, loaded) = Store::open(&dir).unwrap();
        assert!(loaded.is_empty());
        for i in 0..100 {
            store.put(format!("k/{i:03}"), i.to_string());
        }
        store.record(|_, changes| {
            changes.push(Change::Prefix {
                prefix: "k/00".into(),
            })
        });
        store.durable().await.unwrap();
        store.put("last".into(), "1".into());
        store.durable_blocking().unwrap();
        store.close();
        let (_again, loaded) = Store::open(&dir).unwrap();
        assert_eq!(loaded.len(), 91);
        assert_eq!(loaded.get("k/099").map(String::as_str), Some("99"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn key_parts_escape_the_separator() {
        for id in ["a/b", "50%", "%2F", "plain"] {
            assert_eq!(from_key_part(&key_part(id)), id);
            assert!(!key_part(id).contains('/'));
        }
    }
}
