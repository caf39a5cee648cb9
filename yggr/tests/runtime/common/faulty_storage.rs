//! `FaultyStorage`: `MemStorage` with faults a test switches on while the node runs, shared by
//! every clone (so a test keeps one clone to steer the one the node owns).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use yggr::{MemStorage, Membership, NodeId, Storage, StorageWrite, StoredState};

/// The switches. All start off.
#[derive(Debug, Default)]
pub struct StorageFaults {
    /// Writes carrying entries wait while this is set: an fsync that has not returned yet.
    hold_entries: AtomicBool,
    /// A held write is lost when released, and its persist fails: the process crashed
    /// before the fsync.
    lose_held_entries: AtomicBool,
    released: Notify,
    /// Every persist fails (after `FaultyStorage::failure_delay`): the disk is gone.
    fail_writes: AtomicBool,
    /// A persist carrying a snapshot fails: the disk is full.
    fail_snapshots: AtomicBool,
    /// A persist panics: a bug in the storage.
    panic_on_write: AtomicBool,
}

impl StorageFaults {
    /// Holds every later write that carries entries until [`StorageFaults::release`].
    pub fn hold_entries(&self) {
        self.hold_entries.store(true, Ordering::Release);
    }

    /// Lets held writes go on; with `lose` they fail instead of being stored.
    pub fn release(&self, lose: bool) {
        self.lose_held_entries.store(lose, Ordering::Release);
        self.hold_entries.store(false, Ordering::Release);
        self.released.notify_waiters();
    }

    /// Makes every later persist fail.
    pub fn fail_writes(&self) {
        self.fail_writes.store(true, Ordering::SeqCst);
    }

    /// Makes every later persist that carries a snapshot fail.
    pub fn fail_snapshots(&self) {
        self.fail_snapshots.store(true, Ordering::SeqCst);
    }

    /// Makes every later persist panic.
    pub fn panic_on_write(&self) {
        self.panic_on_write.store(true, Ordering::SeqCst);
    }
}

/// `MemStorage` behind [`StorageFaults`].
#[derive(Clone, Default)]
pub struct FaultyStorage {
    pub inner: MemStorage,
    pub faults: Arc<StorageFaults>,
    /// How long a failing persist takes before it reports the error (a slow fsync that fails).
    pub failure_delay: Duration,
    /// `load` fails: the disk is unreadable.
    pub load_error: bool,
    /// `load` returns this instead of what is stored.
    pub load_instead: Option<StoredState>,
}

impl Storage for FaultyStorage {
    type Error = std::io::Error;

    async fn load(&mut self) -> Result<Option<StoredState>, std::io::Error> {
        if self.load_error {
            return Err(std::io::Error::other("the disk is unreadable"));
        }
        if let Some(state) = self.load_instead.clone() {
            return Ok(Some(state));
        }
        Ok(self.inner.load().await.unwrap())
    }

    async fn bootstrap(
        &mut self,
        node_id: NodeId,
        founding: &Membership,
    ) -> Result<(), std::io::Error> {
        self.inner.bootstrap(node_id, founding).await.unwrap();
        Ok(())
    }

    async fn persist(&mut self, writes: Vec<StorageWrite>) -> Result<(), std::io::Error> {
        let faults = &self.faults;
        if faults.panic_on_write.load(Ordering::SeqCst) {
            panic!("a storage bug");
        }
        if faults.fail_writes.load(Ordering::SeqCst) {
            tokio::time::sleep(self.failure_delay).await;
            return Err(std::io::Error::other("fsync failed"));
        }
        let snapshot = writes
            .iter()
            .any(|write| matches!(write, StorageWrite::Snapshot(_)));
        if snapshot && faults.fail_snapshots.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the disk is full"));
        }
        let entries = writes
            .iter()
            .any(|write| matches!(write, StorageWrite::Entries(_)));
        while entries && faults.hold_entries.load(Ordering::Acquire) {
            faults.released.notified().await;
        }
        if entries && faults.lose_held_entries.load(Ordering::Acquire) {
            return Err(std::io::Error::other("crash before fsync"));
        }
        self.inner.persist(writes).await.unwrap();
        Ok(())
    }
}
