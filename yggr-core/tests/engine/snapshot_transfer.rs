//! The leader's side of chunked InstallSnapshot (§7): when a follower is switched to a
//! snapshot, and how the chunk stream is paced under duplicated answers.

use crate::common::*;
use bytes::Bytes;
use yggr_core::{Action, EngineConfig, Event, InstallSnapshotResponse, LogIndex, Rpc};

const STATE: &[u8] = b"0123456789abcdef";

/// Node 1 leads three nodes with 4-byte chunks; node 2 acknowledged the no-op and then missed
/// ten entries, which node 1 has since compacted into a snapshot. Returns the snapshot index.
fn leader_compacted_past_follower_two() -> (Net, LogIndex) {
    let config = EngineConfig {
        snapshot_chunk_size_bytes: 4,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    net.elect(1);
    net.isolate(2);
    for command in 0..10 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    let applied = net.engine(1).last_applied();
    net.step(
        1,
        Event::SnapshotTaken {
            last_included_index: applied,
            bytes: Bytes::from_static(STATE),
        },
    );
    net.in_flight.clear();
    net.heal();
    (net, applied)
}

fn chunk_sends(actions: &[Action<u64>]) -> Vec<u64> {
    sends(actions)
        .into_iter()
        .filter_map(|(_, message)| match message.rpc {
            Rpc::InstallSnapshot(chunk) => Some(chunk.offset),
            _ => None,
        })
        .collect()
}

#[test]
fn heartbeat_to_a_follower_whose_match_point_was_compacted_sends_it_the_snapshot() {
    let (mut net, snapshot_index) = leader_compacted_past_follower_two();
    net.heartbeat(1);
    assert_eq!(
        net.engine(2).snapshot_index(),
        snapshot_index,
        "the whole snapshot arrives in one exchange"
    );
    assert_eq!(net.engine(2).commit_index(), net.engine(1).commit_index());
}

#[test]
fn duplicated_chunk_answers_never_start_a_second_chunk_stream() {
    let (mut net, snapshot_index) = leader_compacted_past_follower_two();
    let interval = net.engine(1).config().heartbeat_interval_ticks;
    let mut first = Vec::new();
    for _ in 0..interval {
        first.extend(net.step(1, Event::Tick));
    }
    assert_eq!(chunk_sends(&first), vec![0]);
    net.in_flight.clear();
    let term = net.engine(1).current_term();
    let answer = |next_offset| {
        message(
            2,
            term.get(),
            Rpc::InstallSnapshotResponse(InstallSnapshotResponse {
                last_included_index: snapshot_index,
                next_offset,
                done: false,
                round: 0,
            }),
        )
    };
    assert_eq!(chunk_sends(&net.step(1, answer(4))), vec![4]);
    assert!(
        chunk_sends(&net.step(1, answer(4))).is_empty(),
        "a duplicate answer sends nothing"
    );
    assert_eq!(chunk_sends(&net.step(1, answer(8))), vec![8]);
    assert!(
        chunk_sends(&net.step(1, answer(4))).is_empty(),
        "nor does a stale one"
    );
    // The stale answer moved the offset back; the next heartbeat resends from there, and the
    // follower's answer puts the stream back on course.
    let mut resent = Vec::new();
    for _ in 0..interval {
        resent.extend(net.step(1, Event::Tick));
    }
    assert_eq!(chunk_sends(&resent), vec![4]);
    assert_eq!(chunk_sends(&net.step(1, answer(12))), vec![12]);
}

#[test]
fn a_heartbeat_leaves_a_moving_chunk_stream_alone_and_resends_a_stalled_one() {
    let (mut net, snapshot_index) = leader_compacted_past_follower_two();
    let interval = net.engine(1).config().heartbeat_interval_ticks;
    let heartbeat = |net: &mut Net| {
        let mut actions = Vec::new();
        for _ in 0..interval {
            actions.extend(net.step(1, Event::Tick));
        }
        chunk_sends(&actions)
    };
    assert_eq!(heartbeat(&mut net), vec![0], "the transfer starts");
    net.in_flight.clear();
    let term = net.engine(1).current_term();
    let answer = message(
        2,
        term.get(),
        Rpc::InstallSnapshotResponse(InstallSnapshotResponse {
            last_included_index: snapshot_index,
            next_offset: 4,
            done: false,
            round: 0,
        }),
    );
    assert_eq!(chunk_sends(&net.step(1, answer)), vec![4]);
    net.in_flight.clear();
    // Chunk 4 is in flight and the stream moved since the last heartbeat: nothing to resend.
    assert!(
        heartbeat(&mut net).is_empty(),
        "a moving stream needs no help"
    );
    // No answer for a whole heartbeat interval: the chunk (or its answer) was lost.
    assert_eq!(heartbeat(&mut net), vec![4], "a stalled stream is resent");
}
