//! How a node first comes up: a new cluster, a joiner that waits to be added, a restart; and
//! what is refused.

use std::time::Duration;

use crate::common::*;
use yggr::{Bootstrap, ConfigError, MemStorage, Node, NodeStartError, Role};

#[tokio::test(start_paused = true)]
async fn recover_over_empty_storage_is_refused_with_a_clear_error() {
    let network = yggr::LocalNetwork::new();
    let config = test_config(id(1), []);
    assert_eq!(config.bootstrap, Bootstrap::Recover);
    let outcome = Node::start(
        config,
        Recorder::default(),
        MemStorage::new(),
        network.transport(id(1)),
    )
    .await;
    let error = outcome.expect_err("nothing to recover");
    assert!(matches!(error, NodeStartError::NothingToRecover));
    assert!(error.to_string().contains("nothing to recover"));
}

#[tokio::test(start_paused = true)]
async fn an_invalid_configuration_is_refused_before_anything_starts() {
    let network = yggr::LocalNetwork::new();
    let mut config = test_config(id(1), [id(2)]);
    config.heartbeat_interval_ticks = 50;
    let outcome = Node::start(
        config,
        Recorder::default(),
        MemStorage::new(),
        network.transport(id(1)),
    )
    .await;
    assert!(matches!(
        outcome,
        Err(NodeStartError::Config(
            ConfigError::InvalidHeartbeatInterval { .. }
        ))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_new_cluster_over_stored_state_recovers_it_and_founds_nothing_again() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    for command in 1..=5 {
        cluster.write(command).await;
    }
    // Restart node 1 with the founding configuration again, over its own storage.
    let node = cluster.nodes.remove(&id(1)).unwrap();
    node.shutdown().await.unwrap();
    let config = test_config(id(1), [id(2), id(3)]);
    assert!(matches!(config.bootstrap, Bootstrap::NewCluster { .. }));
    cluster.launch(config).await;
    cluster.converged(&[1, 2, 3, 4, 5]).await;
    let status = cluster.node(id(1)).status().await.unwrap();
    assert!(status.current_term.get() >= 1, "its term came from storage");
    cluster.write(6).await;
    cluster.converged(&[6]).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_joiner_never_elects_itself_and_commits_nothing() {
    let mut cluster = Cluster::start(1, |_| {}).await;
    cluster.nodes.clear();
    let joiner = cluster.join(id(5)).await;
    tokio::time::sleep(Duration::from_secs(5)).await; // 500 ticks: 25+ election timeouts
    let status = joiner.status().await.unwrap();
    assert_eq!(status.role, Role::Follower);
    assert_eq!(status.leader, None);
    assert_eq!(status.current_term.get(), 0);
    assert_eq!(status.commit_index.get(), 0);
    assert!(status.membership.voters.is_empty());
    assert_eq!(joiner.metrics().await.unwrap().elections_started, 0);
    joiner.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn join_over_a_founding_members_storage_is_refused() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.write(1).await;
    let node = cluster.nodes.remove(&id(2)).unwrap();
    node.shutdown().await.unwrap();
    let mut config = test_config(id(2), []);
    config.bootstrap = Bootstrap::Join;
    let storage = cluster.storage[&id(2)].clone();
    let outcome = Node::start(
        config,
        Recorder::default(),
        storage,
        cluster.network.transport(id(2)),
    )
    .await;
    assert!(matches!(
        outcome,
        Err(NodeStartError::JoinOverFoundingMember)
    ));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_restarted_node_recovers_its_log_and_state_from_storage() {
    let mut cluster = Cluster::start(3, |config| config.snapshot_hint_threshold_entries = 4).await;
    for command in 1..=10 {
        cluster.write(command).await;
    }
    let everything: Vec<u64> = (1..=10).collect();
    cluster.converged(&everything).await;
    for me in [id(1), id(2), id(3)] {
        cluster.restart(me).await;
    }
    assert_eq!(cluster.converged(&everything).await, everything);
    cluster.write(11).await;
    cluster.converged(&[11]).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn storage_recorded_for_another_node_is_refused() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.write(1).await;
    let node = cluster.nodes.remove(&id(2)).unwrap();
    node.shutdown().await.unwrap();
    // Node 3's id over node 2's storage: node 2's vote and log would speak as node 3's.
    let storage = cluster.storage[&id(2)].clone();
    let outcome = Node::start(
        test_config(id(3), []),
        Recorder::default(),
        storage,
        cluster.network.transport(id(3)),
    )
    .await;
    assert!(matches!(
        outcome,
        Err(NodeStartError::WrongNode { stored, configured }) if stored == id(2) && configured == id(3)
    ));
}
