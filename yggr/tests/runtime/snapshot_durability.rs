//! `trigger_snapshot` answers `Ok` only once the snapshot (and the compaction) is durable: if
//! the storage write that carries it fails, the caller hears about it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::common::*;
use yggr::{
    Bootstrap, LocalNetwork, MemStorage, Node, ProposeError, Storage, StorageWrite, StoredState,
};

/// MemStorage that fails any persist carrying a snapshot once armed.
#[derive(Clone, Default)]
struct SnapshotRefusingStorage {
    inner: MemStorage,
    armed: Arc<AtomicBool>,
}

impl Storage for SnapshotRefusingStorage {
    type Error = std::io::Error;

    async fn load(&mut self) -> Result<Option<StoredState>, std::io::Error> {
        Ok(self.inner.load().await.unwrap())
    }

    async fn bootstrap(
        &mut self,
        node_id: yggr::NodeId,
        founding: &yggr::Membership,
    ) -> Result<(), std::io::Error> {
        self.inner.bootstrap(node_id, founding).await.unwrap();
        Ok(())
    }

    async fn persist(&mut self, writes: Vec<StorageWrite>) -> Result<(), std::io::Error> {
        let snapshot = writes
            .iter()
            .any(|write| matches!(write, StorageWrite::Snapshot(_)));
        if snapshot && self.armed.load(Ordering::SeqCst) {
            return Err(std::io::Error::other("the disk is full"));
        }
        self.inner.persist(writes).await.unwrap();
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn trigger_snapshot_is_not_acknowledged_before_the_snapshot_is_durable() {
    let network = LocalNetwork::new();
    let mut config = test_config(id(1), []);
    config.bootstrap = Bootstrap::NewCluster {
        members: [id(1)].into_iter().collect(),
    };
    let storage = SnapshotRefusingStorage::default();
    let node = Node::start(
        config,
        Recorder::default(),
        storage.clone(),
        network.transport(id(1)),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), || async {
        (node.current_leader() == Some(node.id())).then_some(())
    })
    .await
    .expect("a lone node elects itself");
    for command in 0..5 {
        node.write(command).await.unwrap();
    }
    storage.armed.store(true, Ordering::SeqCst);
    let answer = tokio::time::timeout(Duration::from_secs(10), node.admin().trigger_snapshot())
        .await
        .expect("answered");
    // The snapshot's write failed: the node stopped with a fatal storage error...
    assert_eq!(node.write(99).await, Err(ProposeError::Fatal));
    assert!(
        storage
            .inner
            .clone()
            .load()
            .await
            .unwrap()
            .unwrap()
            .snapshot
            .is_none()
    );
    // ...but the caller was told the snapshot was taken and the log compacted.
    assert!(
        answer.is_err(),
        "trigger_snapshot answered {answer:?} although the snapshot never became durable and \
         the node stopped Fatal"
    );
}
