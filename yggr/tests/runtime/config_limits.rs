//! Extreme configurations: each is either refused by `Config::validate` (and so by
//! `Node::start`, as `NodeStartError::Config`) or works; none panics the node.

use std::time::Duration;

use crate::common::*;
use yggr::{LocalNetwork, MemStorage, Node, NodeStartError};

/// Queue limits beyond what tokio's channels hold (`usize::MAX` as "no limit") are refused by
/// `validate`, and so by `Node::start`, instead of panicking inside it.
#[tokio::test(start_paused = true)]
async fn unbounded_queue_limits_are_refused_before_the_node_starts() {
    for config in [
        lone_config(|config| config.max_pending_applies = usize::MAX),
        lone_config(|config| config.max_pending_proposals = usize::MAX),
    ] {
        assert!(matches!(
            config.validate(),
            Err(yggr::ConfigError::TooLarge { .. })
        ));
        let network = LocalNetwork::new();
        let outcome = Node::start(
            config,
            Recorder::default(),
            MemStorage::new(),
            network.transport(id(1)),
        )
        .await;
        assert!(matches!(outcome, Err(NodeStartError::Config(_))));
    }
}

/// A large (but valid) `election_timeout_max_ticks` overflows the draining deadline
/// `ticks + 2 * election_timeout_max_ticks` in `begin_draining`: the driver panics on
/// `shutdown`, which then reports `DriverDead` instead of a clean stop.
#[tokio::test(start_paused = true)]
async fn shutdown_with_a_large_election_timeout_stops_cleanly() {
    let config = lone_config(|config| config.election_timeout_max_ticks = u64::MAX / 2 + 1);
    assert_eq!(config.validate(), Ok(()));
    let network = LocalNetwork::new();
    let node = Node::start(
        config,
        Recorder::default(),
        MemStorage::new(),
        network.transport(id(1)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(node.shutdown().await, Ok(()));
}

/// A huge `tick_interval` (say, to turn ticks off in a test) would overflow the driver's
/// clock: `validate` refuses it, and the longest it accepts runs.
#[tokio::test(start_paused = true)]
async fn a_huge_tick_interval_is_refused_and_the_longest_accepted_runs() {
    let config = lone_config(|config| config.tick_interval = Duration::MAX);
    assert!(matches!(
        config.validate(),
        Err(yggr::ConfigError::TooLarge {
            field: "tick_interval",
            ..
        })
    ));
    let config = lone_config(|config| config.tick_interval = yggr::config::MAX_TICK_INTERVAL);
    let network = LocalNetwork::new();
    let node = Node::start(
        config,
        Recorder::default(),
        MemStorage::new(),
        network.transport(id(1)),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(100_000)).await;
    assert!(node.status().await.is_ok(), "{:?}", node.status().await);
    node.shutdown().await.unwrap();
}
