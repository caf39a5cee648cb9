//! CheckQuorum must depose a leader that lost its majority and nothing else: a follower busy
//! receiving a long snapshot is heard from like any other.

mod common;

use bytes::Bytes;
use common::*;
use yggr_core::{EngineConfig, Event, Role};

/// Review finding E: three nodes, node 3 down, node 2 needs a 64-chunk snapshot delivered one
/// hop per tick. Before the fix the leader stepped down every election timeout and the next
/// one restarted the transfer at offset 0, forever.
#[test]
fn follower_receiving_a_snapshot_slower_than_an_election_timeout_keeps_the_leader() {
    let chunk = 16;
    let config = EngineConfig {
        snapshot_chunk_size_bytes: chunk,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    net.elect(1);
    net.isolate(2);
    for command in 0..20 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    net.heartbeat(1);
    let applied = net.engine(1).last_applied();
    let state = Bytes::from(vec![7u8; chunk * 64]);
    net.step(
        1,
        Event::SnapshotTaken {
            last_included_index: applied,
            bytes: state,
        },
    );
    assert_eq!(net.engine(1).snapshot_index(), applied);
    net.kill(3);
    net.heal();
    net.in_flight.clear();
    let term = net.engine(1).current_term();
    let min_timeout = net.engine(1).config().election_timeout_min_ticks;
    let mut ticks = 0;
    while net.engine(2).snapshot_index() < applied {
        net.tick_all();
        net.deliver_hop();
        ticks += 1;
        assert_eq!(
            net.engine(1).role(),
            Role::Leader,
            "stepped down at tick {ticks}"
        );
        assert!(ticks < 3_000, "the snapshot never installed");
    }
    assert!(
        ticks > min_timeout * 3,
        "the transfer outlasted several election timeouts ({ticks} ticks)"
    );
    assert_eq!(net.engine(1).current_term(), term);
    assert_eq!(net.engine(2).metrics().snapshots_installed, 1);
}

/// CheckQuorum steps down exactly when a minimum election timeout has passed since the last
/// round a majority acknowledged was sent: not a tick earlier, not a tick later.
#[test]
fn leader_steps_down_exactly_one_minimum_timeout_after_its_last_acknowledged_round() {
    let mut net = Net::new(3);
    net.elect(1);
    // Past the first timeout of the reign, during which the leader is always active.
    for _ in 0..4 {
        net.heartbeat(1);
    }
    // The last heartbeat round was sent on the last tick and acknowledged by both followers.
    net.isolate(1);
    let min_timeout = net.engine(1).config().election_timeout_min_ticks;
    for tick in 1..=min_timeout {
        net.step(1, Event::Tick);
        let expected = if tick < min_timeout {
            Role::Leader
        } else {
            Role::Follower
        };
        assert_eq!(net.engine(1).role(), expected, "after {tick} ticks");
    }
}
