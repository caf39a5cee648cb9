//! Snapshots under chaos: frequent compaction racing replication, catch-up by chunked
//! InstallSnapshot, and crashes in the middle of an install.

use yggr_core::{EngineConfig, Event, NodeId};

use crate::harness::{Cluster, ClusterOptions};
use crate::tests::{run_suite, settle};

#[test]
fn long_snapshot_transfers_racing_compaction_keep_every_invariant_and_recover() {
    run_suite("snapshot");
}

fn id(raw: u64) -> NodeId {
    NodeId::new(raw).unwrap()
}

/// A three-node cluster where node `lagging` is down while the others commit and compact.
fn compacted_past(lagging: NodeId, seed: u64) -> Cluster {
    let mut cluster = Cluster::new(ClusterOptions {
        engine: EngineConfig {
            snapshot_chunk_size_bytes: 4,
            ..EngineConfig::default()
        },
        ..ClusterOptions::new(3, seed)
    });
    settle(&mut cluster, 3_000, |c| {
        c.leader().is_some_and(|l| l != lagging)
    });
    cluster.crash(lagging, false).unwrap();
    let leader = cluster.leader().unwrap();
    for _ in 0..20 {
        cluster.propose(leader).unwrap();
    }
    settle(&mut cluster, 3_000, |c| {
        c.nodes[&leader].state_machine.last_applied == c.engine(leader).unwrap().last_log_index()
    });
    cluster.take_snapshot(leader).unwrap();
    cluster.flush_all().unwrap();
    assert!(cluster.engine(leader).unwrap().snapshot_index().get() > 20);
    cluster
}

#[test]
fn follower_behind_the_snapshot_is_caught_up_by_install_snapshot() {
    let lagging = id(3);
    let mut cluster = compacted_past(lagging, 21);
    let leader = cluster.leader().unwrap();
    let floor = cluster.engine(leader).unwrap().snapshot_index();
    cluster.restart(lagging).unwrap();
    settle(&mut cluster, 10_000, |c| {
        c.engine(lagging).unwrap().snapshot_index() >= floor
            && c.nodes[&lagging].state_machine.last_applied >= floor
    });
    assert!(
        cluster
            .engine(lagging)
            .unwrap()
            .metrics()
            .snapshots_installed
            >= 1
    );
}

#[test]
fn crash_in_the_middle_of_an_install_restarts_it_cleanly() {
    let lagging = id(3);
    let mut cluster = compacted_past(lagging, 22);
    let leader = cluster.leader().unwrap();
    let floor = cluster.engine(leader).unwrap().snapshot_index();
    cluster.restart(lagging).unwrap();
    // Let the first chunks arrive, then crash the follower mid-transfer.
    settle(&mut cluster, 10_000, |c| {
        c.engine(leader)
            .is_some_and(|e| e.metrics().snapshots_sent >= 2)
    });
    assert_eq!(cluster.engine(lagging).unwrap().snapshot_index().get(), 0);
    cluster.crash(lagging, true).unwrap();
    for _ in 0..50 {
        cluster.step_node(leader, Event::Tick).unwrap();
        cluster.deliver_one().unwrap();
    }
    cluster.restart(lagging).unwrap();
    settle(&mut cluster, 20_000, |c| {
        c.engine(lagging).unwrap().snapshot_index() >= floor
    });
}
