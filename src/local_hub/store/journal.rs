//! The files of a state directory: `state.snapshot` (every key with its value, one JSON line
//! each, replaced whole by write-then-rename) and `journal.log` (the changes since, appended
//! and fsync'd, one JSON line each). Sans-IO apart from the file calls; no async.
//!
//! Every change is idempotent (put a whole value, delete a key, delete a prefix), so replaying
//! the journal over a snapshot that already holds its effect gives the same map: a crash
//! between the snapshot's rename and the journal's truncation loses nothing. A crash in the
//! middle of an append leaves a torn last line, which loading drops (it was never acknowledged:
//! acknowledgements wait for the fsync that follows the append).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One change to the stored map.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum Change {
    /// Sets `key` to `value` (JSON text).
    Put { key: String, value: String },
    /// Removes `key`.
    Del { key: String },
    /// Removes every key that starts with `prefix`.
    Prefix { prefix: String },
}

impl Change {
    /// Applies the change to `map`.
    pub fn apply(self, map: &mut BTreeMap<String, String>) {
        match self {
            Change::Put { key, value } => {
                map.insert(key, value);
            }
            Change::Del { key } => {
                map.remove(&key);
            }
            Change::Prefix { prefix } => {
                let keys: Vec<String> = map
                    .range(prefix.clone()..)
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in keys {
                    map.remove(&key);
                }
            }
        }
    }
}

/// The journal grows to at least this many bytes, and to the snapshot's size, before the map
/// is written as a new snapshot: each byte of snapshot is rewritten once per as many bytes of
/// journal, whatever the state's size.
const COMPACT_AFTER: u64 = 16 * 1024 * 1024;

/// The open files of a state directory and the map they hold.
pub(crate) struct Journal {
    dir: PathBuf,
    file: File,
    written: u64,
    /// The size of the last snapshot.
    snapshot_bytes: u64,
    /// What the snapshot plus the journal hold.
    pub map: BTreeMap<String, String>,
}

fn io_context(what: &str, path: &Path, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Reads JSON lines of changes; stops at the first line that does not parse (a torn append)
/// and returns the byte length of the good part.
fn read_changes(path: &Path, map: &mut BTreeMap<String, String>) -> std::io::Result<u64> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_context("cannot read", path, e)),
    };
    let mut reader = BufReader::new(file);
    let mut good = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| io_context("cannot read", path, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        match serde_json::from_slice::<Change>(&line) {
            Ok(change) => change.apply(map),
            Err(_) => break,
        }
        good += n as u64;
    }
    Ok(good)
}

/// Writes this process's id to `dir/lock`, unless the id there is another process that is
/// still running (checked through `/proc` on Linux; elsewhere the lock is taken over). A lock
/// left by a killed process is taken over.
fn take_lock(dir: &Path) -> std::io::Result<()> {
    let path = dir.join("lock");
    let me = std::process::id();
    if let Ok(text) = std::fs::read_to_string(&path) {
        let holder = text.trim().parse::<u32>().ok();
        let alive =
            holder.is_some_and(|pid| pid != me && Path::new(&format!("/proc/{pid}")).exists());
        if let (true, Some(pid)) = (alive, holder) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!(
                    "process {pid} is using it (stop that hub, or give this one another directory)"
                ),
            ));
        }
    }
    std::fs::write(&path, format!("{me}\n")).map_err(|e| io_context("cannot write", &path, e))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    // Makes a rename or a new file's name durable (POSIX: fsync on the directory).
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Creates `dir` (and its parents) if needed; a directory this creates is its owner's only,
/// since the files in it hold the hub's keys and its CA's private key.
fn private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Options that create a file readable and writable by its owner only.
fn private_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

impl Journal {
    /// Opens (creating it if needed) the state directory `dir` and loads what it holds.
    /// Refused while another live process holds the directory's `lock` file.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        private_dir(dir).map_err(|e| io_context("cannot create", dir, e))?;
        take_lock(dir)?;
        let mut map = BTreeMap::new();
        let snapshot_bytes = read_changes(&dir.join("state.snapshot"), &mut map)?;
        let journal_path = dir.join("journal.log");
        let good = read_changes(&journal_path, &mut map)?;
        let file = private_options()
            .append(true)
            .open(&journal_path)
            .map_err(|e| io_context("cannot open", &journal_path, e))?;
        // Drop a torn tail, so that the next append starts on a line of its own.
        file.set_len(good)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
            file,
            written: good,
            snapshot_bytes,
            map,
        })
    }

    /// Appends `changes`, makes them durable, and applies them to the map; compacts when the
    /// journal has grown.
    pub fn commit(&mut self, changes: Vec<Change>) -> std::io::Result<()> {
        let mut buffer = Vec::new();
        for change in &changes {
            serde_json::to_writer(&mut buffer, change).map_err(std::io::Error::other)?;
            buffer.push(b'\n');
        }
        self.file.write_all(&buffer)?;
        self.file.sync_data()?;
        self.written += buffer.len() as u64;
        for change in changes {
            change.apply(&mut self.map);
        }
        if self.written > COMPACT_AFTER.max(self.snapshot_bytes) {
            self.compact()?;
        }
        Ok(())
    }

    /// Writes the map as the new snapshot (write, fsync, rename, fsync the directory), then
    /// empties the journal.
    pub fn compact(&mut self) -> std::io::Result<()> {
        let tmp = self.dir.join("state.snapshot.tmp");
        let mut out =
            std::io::BufWriter::new(private_options().write(true).truncate(true).open(&tmp)?);
        let mut bytes = 0u64;
        for (key, value) in &self.map {
            let change = Change::Put {
                key: key.clone(),
                value: value.clone(),
            };
            let line = serde_json::to_vec(&change).map_err(std::io::Error::other)?;
            out.write_all(&line)?;
            out.write_all(b"\n")?;
            bytes += line.len() as u64 + 1;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        self.snapshot_bytes = bytes;
        std::fs::rename(&tmp, self.dir.join("state.snapshot"))?;
        sync_dir(&self.dir)?;
        self.file.set_len(0)?;
        self.file.sync_all()?;
        self.written = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> Change {
        Change::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("iothub-journal-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn changes_survive_reopening_and_a_torn_tail_is_dropped() {
        let dir = scratch("torn");
        let mut journal = Journal::open(&dir).unwrap();
        journal
            .commit(vec![put("a/1", "1"), put("a/2", "2"), put("b", "3")])
            .unwrap();
        journal
            .commit(vec![
                Change::Prefix {
                    prefix: "a/".into(),
                },
                put("c", "4"),
            ])
            .unwrap();
        drop(journal);
        // A crash in the middle of an append.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join("journal.log"))
            .unwrap();
        file.write_all(br#"{"op":"put","key":"d","va"#).unwrap();
        drop(file);
        let mut journal = Journal::open(&dir).unwrap();
        let keys: Vec<&str> = journal.map.keys().map(String::as_str).collect();
        assert_eq!(keys, ["b", "c"]);
        journal.commit(vec![put("e", "5")]).unwrap();
        drop(journal);
        let journal = Journal::open(&dir).unwrap();
        assert_eq!(journal.map.len(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_directory_held_by_a_live_process_is_refused_and_a_dead_ones_lock_taken_over() {
        let dir = scratch("lock");
        std::fs::create_dir_all(&dir).unwrap();
        // Process 1 is always running.
        std::fs::write(dir.join("lock"), "1\n").unwrap();
        let error = Journal::open(&dir).err().expect("refused");
        assert!(error.to_string().contains("process 1"), "{error}");
        // No process has this id (above the kernel's pid_max).
        std::fs::write(dir.join("lock"), "4294967295\n").unwrap();
        Journal::open(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn compaction_keeps_the_map_and_replaying_an_old_journal_over_it_changes_nothing() {
        let dir = scratch("compact");
        let mut journal = Journal::open(&dir).unwrap();
        journal.commit(vec![put("k", "1"), put("x", "2")]).unwrap();
        journal
            .commit(vec![Change::Del { key: "x".into() }])
            .unwrap();
        let old_journal = std::fs::read(dir.join("journal.log")).unwrap();
        journal.compact().unwrap();
        drop(journal);
        // A crash after the rename but before the truncation.
        std::fs::write(dir.join("journal.log"), old_journal).unwrap();
        let journal = Journal::open(&dir).unwrap();
        assert_eq!(
            journal.map.into_iter().collect::<Vec<_>>(),
            [("k".to_owned(), "1".to_owned())]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
