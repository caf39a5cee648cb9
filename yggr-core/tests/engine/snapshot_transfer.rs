//! The leader's side of chunked InstallSnapshot (§7): when a follower is switched to a
//! snapshot, and how the chunk stream is paced under duplicated answers.

use crate::common::*;
use bytes::Bytes;
use yggr_core::{Action, EngineConfig, Event, InstallSnapshotResponse, LogIndex, Message, Rpc};

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

/// Node 2's answer to the leader's chunk of the snapshot through `index`, in the leader's term.
fn answer_from_two(net: &Net, index: LogIndex, next_offset: u64, done: bool) -> Event<u64> {
    message(
        2,
        net.engine(1).current_term().get(),
        Rpc::InstallSnapshotResponse(InstallSnapshotResponse {
            last_included_index: index,
            next_offset,
            done,
            round: 0,
        }),
    )
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
    assert_eq!(
        chunk_sends(&net.step(1, answer_from_two(&net, snapshot_index, 4, false))),
        vec![4]
    );
    assert!(
        chunk_sends(&net.step(1, answer_from_two(&net, snapshot_index, 4, false))).is_empty(),
        "a duplicate answer sends nothing"
    );
    assert_eq!(
        chunk_sends(&net.step(1, answer_from_two(&net, snapshot_index, 8, false))),
        vec![8]
    );
    assert!(
        chunk_sends(&net.step(1, answer_from_two(&net, snapshot_index, 4, false))).is_empty(),
        "nor does a stale one"
    );
    // The stale answer moved the offset back; the next heartbeat resends from there, and the
    // follower's answer puts the stream back on course.
    let mut resent = Vec::new();
    for _ in 0..interval {
        resent.extend(net.step(1, Event::Tick));
    }
    assert_eq!(chunk_sends(&resent), vec![4]);
    assert_eq!(
        chunk_sends(&net.step(1, answer_from_two(&net, snapshot_index, 12, false))),
        vec![12]
    );
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
    let answer = answer_from_two(&net, snapshot_index, 4, false);
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

/// A chunk of snapshot `index` (of term 1) from leader 1 in term 1, for node 2.
fn chunk(index: u64, offset: u64, data: &'static [u8], done: bool) -> Event<u64> {
    chunk_of_term(1, 1, index, offset, data, done)
}

/// A chunk of snapshot `index` whose last entry has `snapshot_term`, from leader 1 in
/// `leader_term`.
fn chunk_of_term(
    leader_term: u64,
    snapshot_term: u64,
    index: u64,
    offset: u64,
    data: &'static [u8],
    done: bool,
) -> Event<u64> {
    message(
        1,
        leader_term,
        snapshot_chunk(index, snapshot_term, offset, data, done),
    )
}

#[test]
fn chunks_of_another_snapshot_in_the_same_term_restart_the_stream_and_never_mix() {
    // The leader took a newer snapshot (same term, higher index) while sending an older one:
    // a later chunk of the new one must not be appended to the bytes of the old one.
    let mut follower = engine(2, &[1, 2, 3]);
    assert_eq!(
        snapshot_reply(&follower.step(chunk(10, 0, b"old-", false))),
        (4, false)
    );
    let mixed = follower.step(chunk(12, 4, b"new!", true));
    assert_eq!(
        snapshot_reply(&mixed),
        (0, false),
        "asked for the new one from the start"
    );
    assert!(
        !mixed
            .iter()
            .any(|action| matches!(action, Action::ApplySnapshot { .. })),
        "nothing installed from mixed bytes"
    );
    assert_eq!(follower.snapshot_index(), idx(0));
    // The new snapshot, sent from the start, installs whole.
    follower.step(chunk(12, 0, b"new-", false));
    let whole = follower.step(chunk(12, 4, b"new!", true));
    assert_eq!(snapshot_reply(&whole), (8, true));
    assert!(whole.contains(&Action::ApplySnapshot {
        bytes: Bytes::from_static(b"new-new!")
    }));
}

#[test]
fn a_late_duplicate_of_the_final_chunk_answer_leaves_replication_where_it_is() {
    let (mut net, snapshot_index) = leader_compacted_past_follower_two();
    net.heartbeat(1);
    assert_eq!(net.engine(2).snapshot_index(), snapshot_index);
    for command in 100..105 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    let before = net.engine(1).follower_progress()[&id(2)];
    assert_eq!(before.0, net.engine(1).last_log_index(), "node 2 caught up");
    let late = answer_from_two(&net, snapshot_index, STATE.len() as u64, true);
    let actions = net.step(1, late);
    assert!(sends(&actions).is_empty(), "nothing to resend: {actions:?}");
    assert_eq!(net.engine(1).follower_progress()[&id(2)], before);
    // Node 2 is still being replicated to, not probed: each new entry goes out at once,
    // without waiting for the answer to the previous one.
    let appends_to_two: usize = (200..203)
        .map(|command| {
            sends(&net.step(1, Event::ClientProposal(command)))
                .into_iter()
                .filter(|(to, message)| {
                    *to == id(2) && matches!(message.rpc, Rpc::AppendEntries(_))
                })
                .count()
        })
        .sum();
    assert_eq!(appends_to_two, 3, "pipelined, as before the late answer");
}

#[test]
fn an_answer_about_an_older_snapshot_leaves_a_transfer_under_way_alone() {
    let (mut net, snapshot_index) = leader_compacted_past_follower_two();
    let interval = net.engine(1).config().heartbeat_interval_ticks;
    let mut started = Vec::new();
    for _ in 0..interval {
        started.extend(net.step(1, Event::Tick));
    }
    assert_eq!(
        chunk_sends(&started),
        vec![0],
        "node 2 is being sent the snapshot"
    );
    net.in_flight.clear();
    let before = net.engine(1).follower_progress()[&id(2)];
    // A late answer from an earlier transfer, of an older snapshot, claiming it is complete.
    let stale = answer_from_two(&net, LogIndex::new(snapshot_index.get() - 3), 8, true);
    let actions = net.step(1, stale);
    assert!(
        sends(&actions).is_empty(),
        "nothing sent on its account: {actions:?}"
    );
    assert_eq!(net.engine(1).follower_progress()[&id(2)], before);
}

#[test]
fn a_chunk_claiming_another_term_for_the_same_snapshot_index_does_not_join_the_stream() {
    // A correct leader's snapshots at one index all end in the same entry, so a chunk that
    // names another term for it is corrupt or forged: it restarts the stream instead of
    // completing it.
    let mut follower = engine(2, &[1, 2, 3]);
    follower.step(message(1, 3, append((0, 0), vec![], 0)));
    let first = follower.step(chunk_of_term(3, 2, 10, 0, b"old-", false));
    assert_eq!(snapshot_reply(&first), (4, false));
    let forged = follower.step(chunk_of_term(3, 3, 10, 4, b"new!", true));
    assert_eq!(snapshot_reply(&forged), (0, false));
    assert!(
        !forged
            .iter()
            .any(|action| matches!(action, Action::ApplySnapshot { .. })),
        "nothing installed from mixed bytes"
    );
    assert_eq!(follower.snapshot_index(), idx(0));
}

// A leadership transfer whose target is caught up by an acknowledgement while a snapshot is
// on its way to it (found by an outside review): the snapshot's final answer moves nothing
// and must not send TimeoutNow a second time.

fn timeout_nows_to(actions: &[Action<u64>], to: u64) -> usize {
    sends(actions)
        .into_iter()
        .filter(|(target, message)| *target == id(to) && message.rpc == Rpc::TimeoutNow)
        .count()
}

fn take_to(net: &mut Net, to: u64) -> Vec<Message<u64>> {
    let mut held = Vec::new();
    net.in_flight.retain(|(target, message)| {
        if *target == id(to) {
            held.push(message.clone());
            false
        } else {
            true
        }
    });
    held
}

#[test]
fn timeout_now_is_sent_once_when_a_completed_snapshot_follows_the_catch_up() {
    let mut net = Net::new(3);
    net.elect(1);
    // An entry goes out to 2 and 3; node 3's copy is held on the wire for a moment.
    net.step(1, Event::ClientProposal(7));
    let append_to_three = take_to(&mut net, 3);
    assert_eq!(append_to_three.len(), 1);
    net.deliver_all(); // node 2 acknowledges: the entry commits and applies on the leader.
    let last = net.engine(1).last_log_index();
    assert_eq!(net.engine(1).last_applied(), last);
    // The leader compacts everything it applied: node 3's match point is now below the floor.
    net.step(
        1,
        Event::SnapshotTaken {
            last_included_index: last,
            bytes: Bytes::from_static(b"state"),
        },
    );
    net.in_flight.clear();
    // Node 3 receives the held append; its acknowledgement (through `last`) is held.
    net.deliver(id(3), append_to_three[0].clone());
    let ack_from_three: Vec<_> = net.in_flight.drain(..).collect();
    assert_eq!(ack_from_three.len(), 1);
    // A heartbeat interval: the anchor (node 3's old match point) is compacted, so node 3 is
    // switched to the snapshot. The chunk is held.
    let interval = net.engine(1).config().heartbeat_interval_ticks;
    for _ in 0..interval {
        net.step(1, Event::Tick);
    }
    let chunk_to_three = take_to(&mut net, 3);
    assert!(
        chunk_to_three
            .iter()
            .any(|m| matches!(m.rpc, Rpc::InstallSnapshot(_))),
        "{chunk_to_three:?}"
    );
    net.in_flight.clear();
    // Transfer to node 3 starts; node 3's acknowledgement arrives: it holds the whole log.
    let mut sent = 0;
    sent += timeout_nows_to(&net.step(1, Event::TransferLeadership { target: id(3) }), 3);
    let (to, ack) = ack_from_three[0].clone();
    assert_eq!(to, id(1));
    sent += timeout_nows_to(&net.step(1, Event::Incoming(ack)), 3);
    assert_eq!(sent, 1, "the target caught up: TimeoutNow once");
    net.in_flight.clear();
    // The snapshot chunk reaches node 3, which answers it done; the answer reaches the leader.
    for chunk in chunk_to_three {
        net.deliver(id(3), chunk);
    }
    let answers: Vec<_> = net.in_flight.drain(..).collect();
    for (to, answer) in answers {
        assert_eq!(to, id(1));
        sent += timeout_nows_to(&net.step(1, Event::Incoming(answer)), 3);
    }
    assert_eq!(
        sent, 1,
        "a final snapshot answer that moves nothing does not catch the target up again"
    );
}
