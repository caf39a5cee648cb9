//! A leader's own log write overlaps replicating it: its AppendEntries leave before its fsync
//! returns. The driver reads no acknowledgement until that write is durable, so the leader
//! never counts its own copy before it is on disk, and no write is answered before then.

use std::time::Duration;

use yggr::{LocalNetwork, Node};

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn followers_receive_entries_before_the_leaders_fsync_but_nothing_is_acknowledged_before_it()
{
    let network = LocalNetwork::new();
    let ids: Vec<_> = (1..=3).map(id).collect();
    let mut nodes = Vec::new();
    let mut gates = Vec::new();
    for me in &ids {
        let storage = FaultyStorage::default();
        gates.push(storage.clone());
        let config = test_config(*me, ids.iter().copied().filter(|other| other != me));
        let node = Node::start(config, Recorder::default(), storage, network.transport(*me))
            .await
            .unwrap();
        nodes.push(node);
    }
    let leader = leader_among(nodes.iter()).await;
    leader.write(1).await.unwrap();
    let position = ids.iter().position(|me| *me == leader.id()).unwrap();
    let gate = gates[position].clone();
    gate.faults.hold_entries();
    let write = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(2).await }
    });
    // The followers store entry 2 while the leader's own write of it is still waiting.
    let followers_have_it = eventually(Duration::from_secs(5), || async {
        let mut all = true;
        for node in nodes.iter().filter(|node| node.id() != leader.id()) {
            let metrics = node.node_metrics().await.ok()?;
            all &= metrics.last_log_index.get() >= 2;
        }
        all.then_some(())
    })
    .await;
    assert!(
        followers_have_it.is_some(),
        "entries left before the leader's fsync"
    );
    // The followers hold it, but the driver reads their acknowledgements only once its own
    // write is durable: no answer yet.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !write.is_finished(),
        "acknowledged before the leader's own write was durable"
    );
    gate.faults.release(false);
    assert_eq!(write.await.unwrap(), Ok(2));
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
