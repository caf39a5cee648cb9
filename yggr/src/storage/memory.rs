//! [`MemStorage`]: storage in memory, shared by its clones.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use yggr_core::{LogEntry, LogIndex, Membership};

use super::{Storage, StorageWrite, StoredState};

/// Storage in memory. Clones share one store, so a node restarted over a clone of the storage
/// an earlier node used sees everything that node stored: a disk that never loses a write.
/// For tests, examples and benchmarks; nothing survives the process.
#[derive(Clone, Debug, Default)]
pub struct MemStorage {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    /// `None` until a node bootstraps over this storage.
    state: Option<Stored>,
}

/// The stored state, with the log in a deque so that appends and trims stay O(changed).
#[derive(Debug, Default)]
struct Stored {
    node_id: Option<yggr_core::NodeId>,
    founding: Membership,
    /// Drawn at bootstrap; 0 for a store written without one (`persist` before `bootstrap`).
    incarnation: u64,
    current_term: yggr_core::Term,
    voted_for: Option<yggr_core::NodeId>,
    snapshot: Option<yggr_core::RecoveredSnapshot>,
    log: VecDeque<LogEntry<Bytes>>,
}

impl Stored {
    fn floor(&self) -> LogIndex {
        self.snapshot
            .as_ref()
            .map_or(LogIndex::ZERO, |snapshot| snapshot.last_included_index)
    }

    /// The position in `log` of `index`, if stored.
    fn position(&self, index: LogIndex) -> Option<usize> {
        let floor = self.floor();
        if index <= floor {
            return None;
        }
        let position = usize::try_from(index.distance_from(floor) - 1).ok()?;
        (position < self.log.len()).then_some(position)
    }

    fn apply(&mut self, write: StorageWrite) {
        match write {
            StorageWrite::HardState {
                current_term,
                voted_for,
            } => {
                self.current_term = current_term;
                self.voted_for = voted_for;
            }
            StorageWrite::Entries(entries) => {
                let Some(first) = entries.first() else {
                    return;
                };
                let floor = self.floor();
                let keep = usize::try_from(first.index.distance_from(floor).saturating_sub(1))
                    .unwrap_or(usize::MAX);
                self.log.truncate(keep);
                self.log
                    .extend(entries.into_iter().filter(|entry| entry.index > floor));
            }
            StorageWrite::Snapshot(snapshot) => {
                let index = snapshot.last_included_index;
                let continues = self
                    .position(index)
                    .is_some_and(|position| self.log[position].term == snapshot.last_included_term);
                match self.position(index) {
                    Some(position) if continues => {
                        self.log.drain(..=position);
                    }
                    _ => self.log.clear(),
                }
                self.snapshot = Some(snapshot);
            }
        }
    }
}

impl MemStorage {
    /// Empty storage: a node starting over it bootstraps.
    pub fn new() -> MemStorage {
        MemStorage::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the store half-written: every write
        // is applied whole. Keep serving what is there.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The number of log entries stored after the snapshot.
    pub fn log_len(&self) -> usize {
        self.lock()
            .state
            .as_ref()
            .map_or(0, |state| state.log.len())
    }
}

impl Storage for MemStorage {
    type Error = Infallible;

    async fn load(&mut self) -> Result<Option<StoredState>, Infallible> {
        let inner = self.lock();
        Ok(inner.state.as_ref().map(|stored| StoredState {
            node_id: stored.node_id,
            founding: stored.founding.clone(),
            current_term: stored.current_term,
            voted_for: stored.voted_for,
            snapshot: stored.snapshot.clone(),
            log: stored.log.iter().cloned().collect(),
        }))
    }

    async fn bootstrap(
        &mut self,
        node_id: yggr_core::NodeId,
        founding: &Membership,
    ) -> Result<(), Infallible> {
        let mut inner = self.lock();
        inner.state.get_or_insert_with(|| Stored {
            node_id: Some(node_id),
            founding: founding.clone(),
            incarnation: crate::identity::new_incarnation(),
            ..Stored::default()
        });
        Ok(())
    }

    /// Drawn at random when the store is bootstrapped; every clone reports the same one.
    fn incarnation(&self) -> Option<u64> {
        self.lock()
            .state
            .as_ref()
            .map(|stored| stored.incarnation)
            .filter(|incarnation| *incarnation != 0)
    }

    async fn persist(&mut self, writes: Vec<StorageWrite>) -> Result<(), Infallible> {
        let mut inner = self.lock();
        let stored = inner.state.get_or_insert_with(Stored::default);
        for write in writes {
            stored.apply(write);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yggr_core::{EntryPayload, RecoveredSnapshot, Term};

    fn entry(index: u64, term: u64) -> LogEntry<Bytes> {
        LogEntry {
            index: LogIndex::new(index),
            term: Term::new(term),
            payload: EntryPayload::Command(Bytes::from(vec![index as u8])),
        }
    }

    fn snapshot(index: u64, term: u64) -> StorageWrite {
        StorageWrite::Snapshot(RecoveredSnapshot {
            last_included_index: LogIndex::new(index),
            last_included_term: Term::new(term),
            membership: Membership::default(),
            bytes: Bytes::new(),
        })
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn clones_share_one_store_and_entries_replace_the_tail() {
        let mut first = MemStorage::new();
        let mut second = first.clone();
        block_on(async {
            assert_eq!(second.load().await.unwrap(), None);
            first
                .bootstrap(yggr_core::NodeId::new(1).unwrap(), &Membership::default())
                .await
                .unwrap();
            first
                .persist(vec![StorageWrite::Entries(vec![
                    entry(1, 1),
                    entry(2, 1),
                    entry(3, 1),
                ])])
                .await
                .unwrap();
            first
                .persist(vec![StorageWrite::Entries(vec![entry(2, 2)])])
                .await
                .unwrap();
            let stored = second.load().await.unwrap().unwrap();
            assert_eq!(stored.log, vec![entry(1, 1), entry(2, 2)]);
        });
    }

    #[test]
    fn snapshot_keeps_a_continuing_suffix_and_drops_a_diverging_log() {
        let mut storage = MemStorage::new();
        block_on(async {
            storage
                .persist(vec![
                    StorageWrite::Entries((1..=5).map(|i| entry(i, 1)).collect()),
                    snapshot(3, 1),
                ])
                .await
                .unwrap();
            let stored = storage.load().await.unwrap().unwrap();
            assert_eq!(stored.log, vec![entry(4, 1), entry(5, 1)]);
            storage.persist(vec![snapshot(5, 2)]).await.unwrap();
            let stored = storage.load().await.unwrap().unwrap();
            assert!(stored.log.is_empty());
            assert_eq!(
                stored.snapshot.unwrap().last_included_index,
                LogIndex::new(5)
            );
        });
    }

    #[test]
    fn bootstrap_never_overwrites_a_stored_founding_configuration() {
        let mut storage = MemStorage::new();
        let founders = Membership::from_voters([yggr_core::NodeId::new(1).unwrap()]);
        block_on(async {
            storage
                .bootstrap(yggr_core::NodeId::new(1).unwrap(), &founders)
                .await
                .unwrap();
            storage
                .bootstrap(yggr_core::NodeId::new(1).unwrap(), &Membership::default())
                .await
                .unwrap();
            assert_eq!(storage.load().await.unwrap().unwrap().founding, founders);
        });
    }

    #[test]
    fn the_incarnation_is_drawn_at_bootstrap_shared_by_clones_and_new_for_new_storage() {
        let id = yggr_core::NodeId::new(1).unwrap();
        let mut first = MemStorage::new();
        assert_eq!(first.incarnation(), None);
        let incarnation = block_on(async {
            first.bootstrap(id, &Membership::default()).await.unwrap();
            first.incarnation().unwrap()
        });
        assert_ne!(incarnation, 0);
        let mut clone = first.clone();
        block_on(clone.bootstrap(id, &Membership::default())).unwrap();
        assert_eq!(clone.incarnation(), Some(incarnation));
        let mut wiped = MemStorage::new();
        block_on(wiped.bootstrap(id, &Membership::default())).unwrap();
        // Two draws of 64 random bits: equal with probability 2^-64.
        assert_ne!(wiped.incarnation(), Some(incarnation));
    }
}
