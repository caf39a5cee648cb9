//! [`DiskStorage`]: durable, checksummed storage in one directory.
//!
//! # Layout
//!
//! ```text
//! <dir>/
//!   LOCK                     held (flock) while a DiskStorage has the directory open
//!   meta                     format version, node id, incarnation and founding configuration,
//!                            written at bootstrap
//!   hard_state               current term and vote
//!   snapshot                 the latest snapshot: index, term, configuration, state bytes
//!   log/
//!     00000000000000000001.seg    segment files, each named by its first index
//!     00000000000000004097.seg
//! ```
//!
//! The byte layout of each file is in the `format` module. `meta`, `hard_state` and
//! `snapshot` are replaced atomically (temporary file, fsync, rename, fsync of the directory).
//! Segments are append-only: a batch of entries is one checksummed batch record, one write and
//! one `fdatasync` of the last segment; once a segment reaches the size limit (64 MiB by default)
//! the next batch starts a new one, whose header is synced (with its directory) before the
//! batch goes in. Truncating a conflicting suffix cuts one file in place (rewriting the header
//! of the batch it cuts into first; batch headers never straddle a disk sector, so that rewrite
//! is whole or absent) and retires whole later ones, newest first. After a snapshot that the
//! log continues, whole segments it covers are retired, oldest first; a snapshot the log does
//! not continue replaces it, and its segments are retired newest first. Retiring a segment
//! renames it (`<name>.seg.retired`) and syncs the directory before the next, so a crash part
//! way through leaves a log without gaps that recovery finishes trimming (see below). The
//! retired files are removed afterwards on the blocking pool, without holding up the write
//! that retired them (removing a large file frees all its blocks, which can take longer than
//! a heartbeat interval); an open removes any a stop or a crash left behind.
//!
//! # Recovery
//!
//! [`DiskStorage::open`] reads everything once, sequentially, and checks every checksum.
//! Leftover temporary files are removed. Each append is one checksummed batch whose
//! `fdatasync` returns before the next append is written, and a new segment's header is
//! synced (with its directory entry) before its first batch. So a crash can damage only the
//! last batch of the last segment, and only in two ways: the file ends early, or sectors of
//! the batch never reached the disk and read as zeros. Recovery repairs exactly those states,
//! logging each at `warn`, and refuses everything else:
//!
//! - **Segment creation.** A last segment shorter than a segment header, or exactly a
//!   header's length of zeros, or a valid header with no batch, holds no entry: it is
//!   removed. A longer segment whose header does not check out held synced batches, and a
//!   header-sized one holding anything else was written wrong: both are refused.
//! - **Torn last batch.** Past the last whole batch of the last segment, the rest of the file
//!   is cut off when it is short of the batch its header announces (or of a header), or when
//!   it is the batch's full length and one of its sector chunks (its bytes cut at every
//!   512-byte multiple of the file offset) reads all zeros, or when its header's sector reads
//!   all zeros and no valid batch follows. This is the rule etcd's write-ahead log applies,
//!   made stricter by the batch's own header: because that header's checksum covers the
//!   batch's length, any byte after the batch's announced end proves a later append was
//!   written, after this batch was synced, so zeros that run from inside a batch across later
//!   ones are refused.
//! - **Interrupted cut.** The records a truncation had dropped from the batch it cut into,
//!   followed only by the zero padding before the next batch, are cut off again.
//! - **Everything else** is an error naming the file and the byte offset of the batch (or
//!   file) that does not check out, and nothing on disk is changed: a full-length last batch
//!   whose checksum fails without an all-zero sector (a flipped bit), a header that does not
//!   check out in a sector that was written, a bad batch followed by a valid one, a non-zero
//!   byte in the padding between two valid batches (which no checksum covers), any mismatch
//!   in a segment that is not the last, a gap between segments, a log that does not start at
//!   index 1 with no snapshot before it, and any bad `meta`, `hard_state` or `snapshot`
//!   file. Truncating the log there could silently drop acknowledged entries.
//!
//! One corruption cannot be told from a crash: zeros from a batch boundary to the end of the
//! last segment look like an append none of whose data reached the disk, whether they cover
//! one batch or several, and are cut off.
//!
//! A snapshot install that a crash interrupted is finished at open. The snapshot file is
//! replaced before any segment is removed, so the open finds the new snapshot over what is
//! left of the old log: a log that continues it is trimmed to the entries after it, and any
//! other log is discarded, as the install was doing. That includes a log that starts past the
//! snapshot's next index, which only an install interrupted while removing a log that does
//! not continue the snapshot leaves (earlier builds removed its segments oldest first): its
//! entries all follow the old log's entry at the snapshot's index, which conflicts with the
//! snapshot, so none of them was committed.
//!
//! ## After a refusal
//!
//! The node cannot start over that directory, and must not be made to: editing or truncating
//! the files until they open can drop entries this node acknowledged, and a restored backup
//! has forgotten votes and entries alike; either can let a leader that lacks committed
//! writes be elected. Bring the node back as a new member instead (the book's Operations
//! chapter has the steps): move the directory aside for diagnosis, remove the node from the
//! cluster through the leader (`remove_peer`), start it with the same id over a fresh, empty
//! directory with `Bootstrap::Join`, and add it again (`add_learner`, then `promote_learner`
//! once it has caught up). The other members must hold a majority of the voters meanwhile.
//!
//! # Failures
//!
//! The first failed write or sync poisons the storage: every later [`Storage::persist`]
//! fails, and the node stops. Retrying an `fsync` that failed is not safe: the kernel may
//! have dropped the dirty pages and report success the second time.
//!
//! All file I/O runs on tokio's blocking pool, never on the runtime's worker threads (inside a
//! simulation, on the simulated host's own thread: see `crate::sys`).

mod files;
pub(crate) mod format;
mod segment;

use crate::sys::fs::{self, File, OpenOptions};
use crate::sys::task::{Blocking, run_blocking, start_blocking};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tracing::{debug, warn};
use yggr_core::{LogEntry, LogIndex, Membership, NodeId, RecoveredSnapshot, Term};

use self::files::{read_if_exists, replace_atomically, sweep_temp_files, write_synced};
use self::format::{
    Meta, decode_hard_state, decode_meta, decode_snapshot, encode_hard_state, encode_meta,
    encode_snapshot,
};
use self::segment::SegmentedLog;
use super::{Storage, StorageWrite, StoredState};

const META_FILE: &str = "meta";
const HARD_STATE_FILE: &str = "hard_state";
const SNAPSHOT_FILE: &str = "snapshot";
const LOG_DIR: &str = "log";
const LOCK_FILE: &str = "LOCK";

/// The default size at which a segment stops taking appends.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// What went wrong with the files of a [`DiskStorage`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiskError {
    /// An operating-system call on `path` failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A file's contents do not check out: a checksum, a length, a magic number or an index
    /// is wrong.
    #[error("{}: corrupt at byte {offset}: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where in the file the bad bytes start.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// An earlier write failed; this storage refuses every write since.
    #[error("storage refuses writes after an earlier failure: {reason}")]
    Poisoned {
        /// The first failure.
        reason: String,
    },
    /// A write the storage contract does not allow (entries that leave a gap in the log).
    #[error("write refused: {0}")]
    Refused(String),
}

impl DiskError {
    fn into_io(self) -> io::Error {
        match self {
            DiskError::Io { ref source, .. } => io::Error::new(source.kind(), self),
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }
}

pub(crate) fn io_error(path: &Path, source: io::Error) -> DiskError {
    DiskError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub(crate) fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> DiskError {
    DiskError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Durable storage in a directory: checksummed, crash-safe, appends in O(entry). See the
/// [module documentation](self) for the layout and the recovery rules.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// let storage = yggr::DiskStorage::open("/var/lib/my-service/raft").await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct DiskStorage {
    path: PathBuf,
    /// `None` while a blocking task holds it, and for good if that task panicked.
    inner: Option<Box<DiskInner>>,
    /// What `open` recovered, handed out by the first `load`.
    recovered: Option<Option<StoredState>>,
    /// The snapshot whose file [`Storage::prepare_snapshot`] wrote and synced last, for the
    /// `persist` that stores it to rename rather than write.
    prepared: Arc<Mutex<Option<PreparedSnapshot>>>,
}

/// A snapshot file written and synced ahead of the `persist` that stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PreparedSnapshot {
    index: LogIndex,
    term: Term,
    /// Bytes in the file, as `encode_snapshot` gives them.
    length: usize,
    /// The file's name in the storage directory (see [`prepared_snapshot_name`]).
    name: String,
}

/// Where a prepared snapshot waits: a temporary name (an open after a crash sweeps it away),
/// unique to the preparation.
fn prepared_snapshot_name(snapshot: &RecoveredSnapshot) -> String {
    format!(
        "snapshot.{}-{}-{}.prepared{}",
        snapshot.last_included_index.get(),
        snapshot.last_included_term.get(),
        // Unique in this process: a preparation still running for a node that has stopped
        // can never write over the file of a node started since over the same directory.
        crate::sys::random::next_sequence(),
        files::TEMP_SUFFIX
    )
}

#[derive(Debug)]
struct DiskInner {
    dir: PathBuf,
    /// Held for as long as the storage is open: a second process opening the directory is
    /// refused rather than allowed to interleave writes.
    _lock: File,
    log: SegmentedLog,
    /// The snapshot's last index (zero without one): entries at or below it are not stored.
    floor: LogIndex,
    bootstrapped: bool,
    /// The incarnation in `meta`; `None` until bootstrapped.
    incarnation: Option<u64>,
    poisoned: Option<String>,
}

impl DiskStorage {
    /// Opens (creating if needed) the storage in directory `path`, recovering what it holds.
    ///
    /// # Errors
    /// An I/O error; `InvalidData` (wrapping a [`DiskError::Corrupt`] that names the file and
    /// offset) when the stored state does not check out; `WouldBlock` when the directory is
    /// already open, by this process or another (a node holds its storage until it has
    /// stopped: await `shutdown()` before opening the directory again).
    pub async fn open(path: impl AsRef<Path>) -> io::Result<DiskStorage> {
        let path = path.as_ref().to_path_buf();
        let opened = {
            let path = path.clone();
            run_blocking(Blocking::Disk, move || {
                DiskInner::open(&path, DEFAULT_SEGMENT_BYTES)
            })
            .await
            .map_err(io::Error::other)?
        };
        let (inner, recovered) = opened.map_err(DiskError::into_io)?;
        Ok(DiskStorage {
            path,
            inner: Some(Box::new(inner)),
            recovered: Some(recovered),
            prepared: Arc::new(Mutex::new(None)),
        })
    }

    /// Sets the size at which a segment stops taking appends (default
    /// [`DEFAULT_SEGMENT_BYTES`]); at least one batch always goes into each segment.
    pub fn with_segment_bytes(mut self, bytes: u64) -> DiskStorage {
        if let Some(inner) = self.inner.as_mut() {
            inner.log.set_segment_bytes_limit(bytes.max(1));
        }
        self
    }

    /// The directory this storage lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory already holds a node's state (a node was bootstrapped over it):
    /// how a process tells its first start, which needs `Bootstrap::NewCluster` or `Join`,
    /// from a restart, which needs `Bootstrap::Recover`.
    pub fn holds_state(&self) -> bool {
        self.inner.as_ref().is_some_and(|inner| inner.bootstrapped)
    }

    /// The number of segment files the log occupies.
    pub fn segment_count(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |inner| inner.log.segment_count())
    }

    /// Runs `work` on the blocking pool with the storage's state.
    async fn blocking<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut DiskInner) -> Result<T, DiskError> + Send + 'static,
    ) -> Result<T, DiskError> {
        let Some(mut inner) = self.inner.take() else {
            return Err(DiskError::Poisoned {
                reason: "an earlier storage task panicked".to_string(),
            });
        };
        let joined = run_blocking(Blocking::Disk, move || {
            let result = work(&mut inner);
            (inner, result)
        })
        .await;
        match joined {
            Ok((inner, result)) => {
                self.inner = Some(inner);
                result
            }
            Err(error) => Err(DiskError::Poisoned {
                reason: format!("a storage task failed: {error}"),
            }),
        }
    }
}

impl Storage for DiskStorage {
    type Error = DiskError;

    async fn load(&mut self) -> Result<Option<StoredState>, DiskError> {
        if let Some(recovered) = self.recovered.take() {
            return Ok(recovered);
        }
        // Asked again: read it all back from disk.
        let path = self.path.clone();
        let limit = self.inner.as_ref().map_or(DEFAULT_SEGMENT_BYTES, |inner| {
            inner.log.segment_bytes_limit()
        });
        self.inner = None;
        let (inner, recovered) =
            run_blocking(Blocking::Disk, move || DiskInner::open(&path, limit))
                .await
                .map_err(|error| DiskError::Poisoned {
                    reason: format!("a storage task failed: {error}"),
                })??;
        self.inner = Some(Box::new(inner));
        Ok(recovered)
    }

    async fn bootstrap(&mut self, node_id: NodeId, founding: &Membership) -> Result<(), DiskError> {
        let founding = founding.clone();
        self.blocking(move |inner| inner.bootstrap(node_id, &founding))
            .await
    }

    /// Drawn at random at bootstrap and kept in `meta`; for a directory of format version 2
    /// (no incarnation in `meta`), derived from the bytes of its `meta`.
    fn incarnation(&self) -> Option<u64> {
        self.inner.as_ref().and_then(|inner| inner.incarnation)
    }

    async fn persist(&mut self, writes: Vec<StorageWrite>) -> Result<(), DiskError> {
        let prepared = self
            .prepared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        let result = self
            .blocking(move |inner| inner.persist(writes, prepared))
            .await;
        if let Some(inner) = self.inner.as_mut() {
            remove_in_background(inner.log.take_retired());
        }
        result
    }

    /// Writes the snapshot's file under a temporary name and syncs it, on the blocking pool;
    /// `persist` then renames it into place. Nothing the storage holds changes here.
    fn prepare_snapshot(
        &self,
        snapshot: &RecoveredSnapshot,
    ) -> impl Future<Output = Result<(), DiskError>> + Send + 'static {
        let dir = self.path.clone();
        let snapshot = snapshot.clone();
        let prepared = Arc::clone(&self.prepared);
        let name = prepared_snapshot_name(&snapshot);
        async move {
            let base = dir.clone();
            let written = run_blocking(Blocking::Disk, move || {
                let path = dir.join(&name);
                let bytes = encode_snapshot(&snapshot);
                write_synced(&path, &bytes).map_err(|error| io_error(&path, error))?;
                Ok::<_, DiskError>(PreparedSnapshot {
                    index: snapshot.last_included_index,
                    term: snapshot.last_included_term,
                    length: bytes.len(),
                    name,
                })
            })
            .await
            .map_err(|error| DiskError::Poisoned {
                reason: format!("a storage task failed: {error}"),
            })??;
            let replaced = prepared
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .replace(written);
            // A preparation never stored (its snapshot was dropped) leaves its file behind:
            // remove it now rather than at the next open.
            if let Some(replaced) = replaced {
                let _ = fs::remove_file(base.join(&replaced.name));
            }
            Ok(())
        }
    }
}

impl DiskInner {
    fn open(dir: &Path, segment_bytes: u64) -> Result<(DiskInner, Option<StoredState>), DiskError> {
        let log_dir = dir.join(LOG_DIR);
        let created = !fs::is_dir(&log_dir);
        fs::create_dir_all(&log_dir).map_err(|error| io_error(&log_dir, error))?;
        if created {
            // New directories are durable only once their parents' entries are synced.
            for synced in [Some(dir), dir.parent()].into_iter().flatten() {
                if !synced.as_os_str().is_empty() {
                    files::sync_dir(synced).map_err(|error| io_error(synced, error))?;
                }
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| io_error(&lock_path, error))?;
        lock.try_lock().map_err(|error| match error {
            std::fs::TryLockError::WouldBlock => io_error(
                &lock_path,
                io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "this storage directory is already open (a running node, in this process or \
                     another; a node dropped without `shutdown().await` releases it once its \
                     tasks stop)",
                ),
            ),
            std::fs::TryLockError::Error(error) => io_error(&lock_path, error),
        })?;
        for swept in sweep_temp_files(dir)
            .map_err(|error| io_error(dir, error))?
            .into_iter()
            .chain(sweep_temp_files(&log_dir).map_err(|error| io_error(&log_dir, error))?)
        {
            warn!(target: "yggr::node", path = %swept.display(), "removed a temporary file a crash left behind");
        }
        // Segments the log had retired before the last stop, whose removal did not finish.
        for swept in files::sweep(&log_dir, segment::RETIRED_SUFFIX)
            .map_err(|error| io_error(&log_dir, error))?
        {
            debug!(target: "yggr::node", path = %swept.display(), "removed a retired log segment");
        }
        let read = |name: &str| {
            let path = dir.join(name);
            read_if_exists(&path).map_err(|error| io_error(&path, error))
        };
        let decode_error = |name: &str, error: format::FormatError| {
            corrupt(&dir.join(name), error.offset, error.reason)
        };
        let meta = read(META_FILE)?
            .map(|bytes| decode_meta(&bytes).map_err(|error| decode_error(META_FILE, error)))
            .transpose()?;
        let hard_state = read(HARD_STATE_FILE)?
            .map(|bytes| {
                decode_hard_state(&bytes).map_err(|error| decode_error(HARD_STATE_FILE, error))
            })
            .transpose()?;
        let snapshot = read(SNAPSHOT_FILE)?
            .map(|bytes| {
                decode_snapshot(&bytes).map_err(|error| decode_error(SNAPSHOT_FILE, error))
            })
            .transpose()?;
        let (mut log, mut entries) = SegmentedLog::recover(&log_dir, segment_bytes)?;
        let Some(Meta {
            node_id,
            incarnation,
            founding,
        }) = meta
        else {
            if hard_state.is_some() || snapshot.is_some() || !entries.is_empty() {
                return Err(corrupt(
                    &dir.join(META_FILE),
                    0,
                    "the meta file is missing but the directory holds raft state",
                ));
            }
            let inner = DiskInner {
                dir: dir.to_path_buf(),
                _lock: lock,
                log,
                floor: LogIndex::ZERO,
                bootstrapped: false,
                incarnation: None,
                poisoned: None,
            };
            return Ok((inner, None));
        };
        let floor = snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |snapshot| snapshot.last_included_index);
        reconcile_log_with_snapshot(dir, &mut log, &mut entries, snapshot.as_ref())?;
        // Opening is not on the driver's path: what recovery retired goes at once.
        for path in log.take_retired() {
            files::remove_if_exists(&path).map_err(|error| io_error(&path, error))?;
        }
        let (current_term, voted_for) = hard_state.unwrap_or_default();
        let stored = StoredState {
            node_id: Some(node_id),
            founding,
            current_term,
            voted_for,
            snapshot,
            log: entries,
        };
        let inner = DiskInner {
            dir: dir.to_path_buf(),
            _lock: lock,
            log,
            floor,
            bootstrapped: true,
            incarnation: Some(incarnation),
            poisoned: None,
        };
        Ok((inner, Some(stored)))
    }

    fn bootstrap(&mut self, node_id: NodeId, founding: &Membership) -> Result<(), DiskError> {
        if self.bootstrapped {
            return Ok(());
        }
        let meta = Meta {
            node_id,
            incarnation: crate::identity::new_incarnation(),
            founding: founding.clone(),
        };
        self.guarded(|inner| {
            replace_atomically(&inner.dir, META_FILE, &encode_meta(&meta))
                .map_err(|error| io_error(&inner.dir.join(META_FILE), error))
        })?;
        self.bootstrapped = true;
        self.incarnation = Some(meta.incarnation);
        Ok(())
    }

    fn persist(
        &mut self,
        writes: Vec<StorageWrite>,
        prepared: Option<PreparedSnapshot>,
    ) -> Result<(), DiskError> {
        let mut writes = writes.into_iter().peekable();
        while let Some(write) = writes.next() {
            match write {
                StorageWrite::HardState {
                    current_term,
                    voted_for,
                } => self.guarded(|inner| {
                    let bytes = encode_hard_state(current_term, voted_for);
                    replace_atomically(&inner.dir, HARD_STATE_FILE, &bytes)
                        .map_err(|error| io_error(&inner.dir.join(HARD_STATE_FILE), error))
                })?,
                StorageWrite::Entries(mut entries) => {
                    // Consecutive entry writes become one append: one write, one fdatasync.
                    while let Some(StorageWrite::Entries(_)) = writes.peek() {
                        let Some(StorageWrite::Entries(more)) = writes.next() else {
                            unreachable!("peeked an entries write");
                        };
                        merge_entries(&mut entries, more);
                    }
                    self.guarded(|inner| inner.store_entries(entries))?;
                }
                StorageWrite::Snapshot(snapshot) => {
                    let ready = prepared.as_ref().filter(|prepared| {
                        prepared.index == snapshot.last_included_index
                            && prepared.term == snapshot.last_included_term
                    });
                    self.guarded(|inner| inner.store_snapshot(&snapshot, ready))?;
                }
            }
        }
        Ok(())
    }

    /// Runs a write unless poisoned; a failure poisons.
    fn guarded(
        &mut self,
        write: impl FnOnce(&mut DiskInner) -> Result<(), DiskError>,
    ) -> Result<(), DiskError> {
        if let Some(reason) = &self.poisoned {
            return Err(DiskError::Poisoned {
                reason: reason.clone(),
            });
        }
        let result = write(self);
        if let Err(error) = &result {
            self.poisoned = Some(error.to_string());
        }
        result
    }

    fn store_entries(&mut self, mut entries: Vec<LogEntry<Bytes>>) -> Result<(), DiskError> {
        let floor = self.floor;
        entries.retain(|entry| entry.index > floor);
        let Some(first) = entries.first() else {
            return Ok(());
        };
        let next = self.log.next();
        if first.index > next {
            return Err(DiskError::Refused(format!(
                "entries start at {} but the log ends before {}",
                first.index.get(),
                next.get()
            )));
        }
        self.log.truncate_from(first.index)?;
        self.log.append(&entries)
    }

    /// Stores `snapshot`: from the file `prepared` describes when there is one (a rename),
    /// else by writing it.
    fn store_snapshot(
        &mut self,
        snapshot: &RecoveredSnapshot,
        prepared: Option<&PreparedSnapshot>,
    ) -> Result<(), DiskError> {
        let index = snapshot.last_included_index;
        // The snapshot is durable before any log it covers is removed: a crash in between
        // recovers the new snapshot over the old log, and recovery trims the log the same way.
        let target = self.dir.join(SNAPSHOT_FILE);
        let from_prepared = prepared
            .map(|prepared| self.dir.join(&prepared.name))
            .filter(|path| {
                prepared.is_some_and(|prepared| {
                    fs::file_len(path).is_ok_and(|length| length == prepared.length as u64)
                })
            });
        if let Some(path) = from_prepared {
            fs::rename(&path, &target)
                .and_then(|()| files::sync_dir(&self.dir))
                .map_err(|error| io_error(&target, error))?;
        } else {
            replace_atomically(&self.dir, SNAPSHOT_FILE, &encode_snapshot(snapshot))
                .map_err(|error| io_error(&target, error))?;
        }
        let continues = self.log.term_at(index)? == Some(snapshot.last_included_term);
        if continues {
            self.log.remove_through(index)?;
        } else {
            self.log.clear(LogIndex::new(index.get() + 1))?;
        }
        self.log.set_next_if_empty(LogIndex::new(index.get() + 1));
        self.floor = index;
        Ok(())
    }
}

/// Removes segment files the log retired, on the blocking pool, without waiting: removing a
/// 64 MiB file can take a hundred milliseconds, which the driver must not spend between
/// heartbeats. The retirement (a rename, synced) already took them out of the log, so a
/// crash before they are gone leaves files the next open removes; nothing waits on them.
fn remove_in_background(retired: Vec<PathBuf>) {
    if retired.is_empty() {
        return;
    }
    start_blocking(move || {
        for path in retired {
            if let Err(error) = files::remove_if_exists(&path) {
                warn!(target: "yggr::node", path = %path.display(), %error, "could not remove a retired log segment; the next open removes it");
            }
        }
    });
}

/// Merges a later entries write into an earlier one of the same batch: the later one
/// replaces everything from its first index on.
fn merge_entries(entries: &mut Vec<LogEntry<Bytes>>, more: Vec<LogEntry<Bytes>>) {
    let Some(next_first) = more.first().map(|entry| entry.index) else {
        return;
    };
    match entries.first().map(|entry| entry.index) {
        Some(first) if next_first > first => {
            let keep = (next_first.get() - first.get()) as usize;
            entries.truncate(keep);
            entries.extend(more);
        }
        _ => *entries = more,
    }
}

/// Applies the snapshot rule to a recovered log, as [`DiskInner::store_snapshot`] does on the
/// way in: entries the snapshot covers are dropped, and the rest kept only if the log holds
/// the snapshot's last entry with its term (or starts right after it). A crash between
/// writing a snapshot and trimming the log leaves exactly this to finish.
fn reconcile_log_with_snapshot(
    dir: &Path,
    log: &mut SegmentedLog,
    entries: &mut Vec<LogEntry<Bytes>>,
    snapshot: Option<&RecoveredSnapshot>,
) -> Result<(), DiskError> {
    let log_dir = dir.join(LOG_DIR);
    let Some(snapshot) = snapshot else {
        if let Some(first) = entries.first()
            && first.index != LogIndex::new(1)
        {
            return Err(corrupt(
                &log_dir,
                0,
                format!(
                    "the log starts at index {} with no snapshot before it",
                    first.index.get()
                ),
            ));
        }
        return Ok(());
    };
    let floor = snapshot.last_included_index;
    let after = LogIndex::new(floor.get() + 1);
    let Some(first) = entries.first().map(|entry| entry.index) else {
        log.set_next_if_empty(after);
        return Ok(());
    };
    if first > after {
        // Only an install replacing a log that does not continue the snapshot, cut short by
        // a crash after removing the log's first segments, leaves this: earlier builds
        // removed them oldest first (this one removes them newest first), and a compaction
        // never removes the segment holding `floor + 1`. The old log reached past the
        // snapshot's index, so its entry there conflicts with the snapshot, and every entry
        // left follows that one: none of them was committed, and discarding them finishes
        // the install.
        warn!(target: "yggr::node", first = first.get(), snapshot = floor.get(), "discarding a log that starts past the snapshot (a crash interrupted the snapshot's install)");
        entries.clear();
        log.clear(after)?;
        return Ok(());
    }
    let at_floor = entries
        .iter()
        .find(|entry| entry.index == floor)
        .map(|entry| entry.term);
    let continues = first == after || at_floor == Some(snapshot.last_included_term);
    if continues {
        entries.retain(|entry| entry.index > floor);
        log.remove_through(floor)?;
    } else {
        warn!(target: "yggr::node", "discarding a log that does not continue the snapshot (a crash interrupted its install)");
        entries.clear();
        log.clear(after)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Every state a crash in the middle of a snapshot install can leave must open, to the
    //! snapshot and a log that continues it. The log's segment removals are stopped after each
    //! possible count by the log's test-only crash point.

    use yggr_core::{EntryPayload, Term};

    use super::*;

    /// Four segments holding 1..=12 (three entries each), term 1.
    const SEGMENT_BYTES: u64 = 64;

    fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> StorageWrite {
        StorageWrite::Entries(
            range
                .map(|index| LogEntry {
                    index: LogIndex::new(index),
                    term: Term::new(term),
                    payload: EntryPayload::Command(Bytes::from(vec![index as u8; 8])),
                })
                .collect(),
        )
    }

    fn snapshot(index: u64, term: u64) -> StorageWrite {
        StorageWrite::Snapshot(RecoveredSnapshot {
            last_included_index: LogIndex::new(index),
            last_included_term: Term::new(term),
            membership: Membership::default(),
            bytes: Bytes::from_static(b"state"),
        })
    }

    fn open(dir: &Path) -> (DiskInner, StoredState) {
        let (inner, state) = DiskInner::open(dir, SEGMENT_BYTES)
            .unwrap_or_else(|error| panic!("a crash state does not open: {error}"));
        (inner, state.expect("bootstrapped"))
    }

    fn indexes(state: &StoredState) -> Vec<(u64, u64)> {
        state
            .log
            .iter()
            .map(|entry| (entry.index.get(), entry.term.get()))
            .collect()
    }

    /// A bootstrapped storage in `dir` holding 1..=12 (term 1) in four segments.
    fn four_segments(dir: &Path) -> DiskInner {
        let (mut inner, _) = DiskInner::open(dir, SEGMENT_BYTES).unwrap();
        inner
            .bootstrap(NodeId::new(1).unwrap(), &Membership::default())
            .unwrap();
        for first in [1, 4, 7, 10] {
            inner
                .persist(vec![entries(first..=first + 2, 1)], None)
                .unwrap();
        }
        inner
    }

    /// Stores 1..=12 in four segments, then installs `install`, crashing after
    /// `removals` segment removals; returns what a reopen recovers, after checking that the
    /// log takes the entries after the snapshot.
    fn install_interrupted_after(removals: usize, install: StorageWrite) -> StoredState {
        let dir = tempfile::tempdir().unwrap();
        let mut inner = four_segments(dir.path());
        assert_eq!(inner.log.segment_count(), 4);
        inner.log.removals_before_crash = Some(removals);
        let _ = inner.persist(vec![install], None);
        drop(inner);
        let (mut inner, state) = open(dir.path());
        let floor = state.snapshot.as_ref().unwrap().last_included_index.get();
        let next = state
            .log
            .last()
            .map_or(floor + 1, |entry| entry.index.get() + 1);
        inner
            .persist(vec![entries(next..=next + 1, 2)], None)
            .unwrap();
        drop(inner);
        let (_, reopened) = open(dir.path());
        assert_eq!(reopened.log.last().unwrap().index.get(), next + 1);
        state
    }

    /// A snapshot at 6 of term 2 does not continue a log whose entry 6 has term 1: the whole
    /// log goes, and every crash point along the way recovers the snapshot with no log.
    #[test]
    fn every_crash_point_of_an_install_that_replaces_the_log_opens_to_the_snapshot_alone() {
        for removals in 0..=4 {
            let state = install_interrupted_after(removals, snapshot(6, 2));
            let snapshot = state.snapshot.as_ref().unwrap();
            assert_eq!(snapshot.last_included_index, LogIndex::new(6));
            assert!(
                state.log.is_empty(),
                "after {removals} removals the log holds {:?}",
                indexes(&state)
            );
        }
    }

    /// A snapshot at 8 of term 1 continues the log: the segments wholly below it go, and
    /// every crash point recovers the snapshot followed by 9..=12.
    #[test]
    fn every_crash_point_of_an_install_that_continues_the_log_keeps_the_entries_after_it() {
        for removals in 0..=2 {
            let state = install_interrupted_after(removals, snapshot(8, 1));
            let snapshot = state.snapshot.as_ref().unwrap();
            assert_eq!(snapshot.last_included_index, LogIndex::new(8));
            assert_eq!(
                indexes(&state),
                (9..=12).map(|index| (index, 1)).collect::<Vec<_>>(),
                "after {removals} removals"
            );
        }
    }

    fn log_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir.join(LOG_DIR))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Compaction must not spend the driver's time freeing a large file's blocks: the write
    /// that stores the snapshot only renames the covered segments out of the log (cheap, and
    /// synced in order), and leaves their removal to a background task. Whatever a stop or a
    /// crash leaves of them, the next open removes.
    #[test]
    fn compaction_retires_covered_segments_and_the_next_open_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut inner = four_segments(dir.path());
        inner.persist(vec![snapshot(8, 1)], None).unwrap();
        assert_eq!(
            log_files(dir.path()),
            [
                "00000000000000000001.seg.retired",
                "00000000000000000004.seg.retired",
                "00000000000000000007.seg",
                "00000000000000000010.seg",
            ],
            "the persist renamed the covered segments and removed nothing"
        );
        let retired = inner.log.take_retired();
        assert_eq!(retired.len(), 2, "{retired:?}");
        drop(inner);

        let (_, state) = open(dir.path());
        assert_eq!(
            indexes(&state),
            (9..=12).map(|index| (index, 1)).collect::<Vec<_>>()
        );
        assert_eq!(
            log_files(dir.path()),
            ["00000000000000000007.seg", "00000000000000000010.seg"],
            "the open removed the retired segments"
        );
    }
}
