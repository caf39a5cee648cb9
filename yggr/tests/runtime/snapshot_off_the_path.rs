//! Taking a snapshot must not cost the leader its role. A large state machine snapshotted by
//! every member at the same index, on storage that needs several election timeouts to write
//! it: heartbeats, acknowledgements and commits go on meanwhile, because the bytes are
//! written on the side (`Storage::prepare_snapshot`) and the driver's own write only
//! finishes the job.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use yggr::core::RecoveredSnapshot;
use yggr::{
    DecodeError, LocalNetwork, MemStorage, Membership, Node, NodeId, SnapshotError, StateMachine,
    Storage, StorageWrite, StoredState,
};

use crate::common::*;

/// Storage whose snapshot writes take `delay`: in `prepare_snapshot` when the node prepares
/// one, else inside `persist`, holding up whoever awaits it.
#[derive(Clone, Default)]
struct SlowSnapshots {
    inner: MemStorage,
    delay: Duration,
    prepared: Arc<Mutex<BTreeSet<u64>>>,
}

impl Storage for SlowSnapshots {
    type Error = std::convert::Infallible;

    async fn load(&mut self) -> Result<Option<StoredState>, Self::Error> {
        self.inner.load().await
    }

    async fn bootstrap(
        &mut self,
        node_id: NodeId,
        founding: &Membership,
    ) -> Result<(), Self::Error> {
        self.inner.bootstrap(node_id, founding).await
    }

    async fn persist(&mut self, writes: Vec<StorageWrite>) -> Result<(), Self::Error> {
        for write in &writes {
            if let StorageWrite::Snapshot(snapshot) = write {
                let index = snapshot.last_included_index.get();
                if !self.prepared.lock().unwrap().remove(&index) {
                    tokio::time::sleep(self.delay).await;
                }
            }
        }
        self.inner.persist(writes).await
    }

    fn prepare_snapshot(
        &self,
        snapshot: &RecoveredSnapshot,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let index = snapshot.last_included_index.get();
        let prepared = Arc::clone(&self.prepared);
        let delay = self.delay;
        async move {
            tokio::time::sleep(delay).await;
            prepared.lock().unwrap().insert(index);
            Ok(())
        }
    }
}

/// A counter whose snapshot carries 64 MiB of ballast.
#[derive(Default)]
struct Bulky {
    count: u64,
}

const BALLAST: usize = 64 << 20;

impl StateMachine for Bulky {
    type Command = ();
    type Response = u64;

    fn encode_command(_: &()) -> Vec<u8> {
        Vec::new()
    }

    fn decode_command(_: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }

    fn apply(&mut self, (): ()) -> u64 {
        self.count += 1;
        self.count
    }

    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut bytes = vec![0; BALLAST];
        bytes[..8].copy_from_slice(&self.count.to_le_bytes());
        Ok(bytes)
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        self.count = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    }
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_slower_to_store_than_several_election_timeouts_costs_the_leader_nothing() {
    let network = LocalNetwork::new();
    let ids: Vec<NodeId> = (1..=3).map(id).collect();
    let mut nodes = BTreeMap::new();
    for me in &ids {
        let mut config = test_config(*me, ids.iter().copied().filter(|other| other != me));
        // Every member snapshots at the same applied index.
        config.snapshot_hint_threshold_entries = 40;
        let storage = SlowSnapshots {
            // An election timeout is 10-20 ticks of 10 ms: this is five of the longest.
            delay: Duration::from_secs(1),
            ..SlowSnapshots::default()
        };
        let node = Node::start(config, Bulky::default(), storage, network.transport(*me))
            .await
            .unwrap();
        nodes.insert(*me, node);
    }
    let leader = leader_among(nodes.values()).await;
    let term = leader.status().await.unwrap().current_term;
    let mut slowest = Duration::ZERO;
    // Past three snapshot points, with every snapshot taking a second to store.
    for _ in 0..150 {
        let started = tokio::time::Instant::now();
        leader.write(()).await.expect("the leader keeps its role");
        slowest = slowest.max(started.elapsed());
        // A little time between writes, so the snapshots' storage runs beside them.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = leader.status().await.unwrap();
    assert_eq!(status.current_term, term, "no election happened");
    assert_eq!(status.leader, Some(leader.id()));
    assert!(
        slowest < Duration::from_millis(200),
        "a write waited {slowest:?}: the snapshot's storage held up the driver"
    );
    for node in nodes.values() {
        let metrics = node.node_metrics().await.unwrap();
        assert!(
            metrics.snapshots_taken >= 2,
            "node {}: {} snapshots",
            node.id(),
            metrics.snapshots_taken
        );
        assert_eq!(metrics.snapshots_failed, 0);
    }
    for node in nodes.into_values() {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_the_state_machine_refuses_is_counted_as_failed() {
    #[derive(Default)]
    struct Refuses;
    impl StateMachine for Refuses {
        type Command = ();
        type Response = ();
        fn encode_command(_: &()) -> Vec<u8> {
            Vec::new()
        }
        fn decode_command(_: &[u8]) -> Result<(), DecodeError> {
            Ok(())
        }
        fn apply(&mut self, (): ()) {}
        fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
            Err(SnapshotError::new("not now"))
        }
    }
    let network = LocalNetwork::new();
    let node = lone_leader(&network, Refuses, MemStorage::new(), |_| {}).await;
    node.write(()).await.unwrap();
    assert!(node.admin().trigger_snapshot().await.is_err());
    let metrics = node.node_metrics().await.unwrap();
    assert_eq!((metrics.snapshots_taken, metrics.snapshots_failed), (0, 1));
    node.shutdown().await.unwrap();
}

/// `DiskStorage` writes a prepared snapshot's file on the side and stores it with a rename.
mod disk {
    use yggr::{DiskStorage, Storage, StorageWrite};

    use crate::common::id;
    use crate::disk_storage::{entries, founding, indexes, snapshot};

    /// Storage in `dir` founded by node 1, holding entries 1 to 5 of term 1.
    async fn five_entries(dir: &std::path::Path) -> DiskStorage {
        let mut storage = DiskStorage::open(dir).await.unwrap();
        storage.bootstrap(id(1), &founding()).await.unwrap();
        storage.persist(vec![entries(1..=5, 1)]).await.unwrap();
        storage
    }

    fn prepared_of(write: &StorageWrite) -> &yggr::core::RecoveredSnapshot {
        match write {
            StorageWrite::Snapshot(snapshot) => snapshot,
            _ => unreachable!("a snapshot write"),
        }
    }

    #[tokio::test]
    async fn a_prepared_snapshot_is_stored_by_its_persist_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = five_entries(dir.path()).await;
        let write = snapshot(3, 1);
        storage.prepare_snapshot(prepared_of(&write)).await.unwrap();
        // Prepared, not stored: the directory still holds no snapshot.
        assert!(!dir.path().join("snapshot").exists());
        storage.persist(vec![write.clone()]).await.unwrap();
        drop(storage);
        let mut reopened = DiskStorage::open(dir.path()).await.unwrap();
        let state = reopened.load().await.unwrap().unwrap();
        assert_eq!(state.snapshot.as_ref(), Some(prepared_of(&write)));
        assert_eq!(indexes(&state), vec![(4, 1), (5, 1)]);
    }

    #[tokio::test]
    async fn a_crash_between_preparing_and_storing_a_snapshot_recovers_the_previous_state() {
        let dir = tempfile::tempdir().unwrap();
        let storage = five_entries(dir.path()).await;
        let write = snapshot(3, 1);
        storage.prepare_snapshot(prepared_of(&write)).await.unwrap();
        drop(storage);
        let mut reopened = DiskStorage::open(dir.path()).await.unwrap();
        let state = reopened.load().await.unwrap().unwrap();
        assert_eq!(state.snapshot, None);
        assert_eq!(indexes(&state).len(), 5);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("prepared"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[tokio::test]
    async fn a_snapshot_stored_without_its_preparation_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = five_entries(dir.path()).await;
        // Prepared for index 2, stored at 3: the preparation does not match and is not used.
        storage
            .prepare_snapshot(prepared_of(&snapshot(2, 1)))
            .await
            .unwrap();
        let write = snapshot(3, 1);
        storage.persist(vec![write.clone()]).await.unwrap();
        drop(storage);
        let mut reopened = DiskStorage::open(dir.path()).await.unwrap();
        let state = reopened.load().await.unwrap().unwrap();
        assert_eq!(state.snapshot.as_ref(), Some(prepared_of(&write)));
    }
}
