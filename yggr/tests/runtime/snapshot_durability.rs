//! `trigger_snapshot` answers `Ok` only once the snapshot (and the compaction) is durable: if
//! the storage write that carries it fails, the caller hears about it.

use std::time::Duration;

use crate::common::*;
use yggr::{LocalNetwork, ProposeError, Storage};

#[tokio::test(start_paused = true)]
async fn trigger_snapshot_is_not_acknowledged_before_the_snapshot_is_durable() {
    let network = LocalNetwork::new();
    let storage = FaultyStorage::default();
    let node = lone_leader(&network, Recorder::default(), storage.clone(), |_| {}).await;
    for command in 0..5 {
        node.write(command).await.unwrap();
    }
    storage.faults.fail_snapshots();
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
