//! Figure 2 rules for log replication (§5.3), the commit rule (§5.4.2) and the leader's side
//! of pipelining and backtracking.

use crate::common::*;
use yggr_core::Bytes;
use yggr_core::{
    Action, AppendEntries, AppendEntriesResponse, AppendOutcome, EngineConfig, EntryPayload, Event,
    LogEntry, Role, Rpc,
};

fn outcome(actions: &[Action<u64>]) -> AppendOutcome {
    sends(actions)
        .into_iter()
        .find_map(|(_, m)| match m.rpc {
            Rpc::AppendEntriesResponse(response) => Some(response.outcome),
            _ => None,
        })
        .expect("an AppendEntries response")
}

/// A follower holding `terms` (entry i+1 has term terms[i]) in term `current`.
fn follower_with(terms: &[u64], current: u64) -> yggr_core::Engine<u64> {
    let mut node = engine(1, &[1, 2, 3]);
    let entries = terms
        .iter()
        .enumerate()
        .map(|(i, t)| entry(i as u64 + 1, *t, i as u64 + 1))
        .collect();
    node.step(message(2, current, append((0, 0), entries, 0)));
    node
}

#[test]
fn append_refused_when_leader_term_is_stale() {
    let mut node = follower_with(&[1], 3);
    let actions = node.step(message(3, 2, append((1, 1), vec![entry(2, 2, 9)], 0)));
    assert_eq!(outcome(&actions), AppendOutcome::StaleTerm);
    assert_eq!(node.last_log_index(), idx(1));
    assert_eq!(sends(&actions)[0].1.term, term(3));
}

#[test]
fn append_refused_when_log_has_no_entry_at_prev_index() {
    let mut node = follower_with(&[1, 1], 1);
    let actions = node.step(message(2, 1, append((5, 1), vec![entry(6, 1, 9)], 0)));
    assert_eq!(
        outcome(&actions),
        AppendOutcome::Rejected {
            prev_log_index: idx(5),
            conflict_term: None,
            conflict_index: idx(3),
        }
    );
}

#[test]
fn append_refused_when_prev_term_differs_hints_first_index_of_that_term() {
    let mut node = follower_with(&[1, 2, 2, 2], 3);
    let actions = node.step(message(2, 3, append((4, 3), vec![], 0)));
    assert_eq!(
        outcome(&actions),
        AppendOutcome::Rejected {
            prev_log_index: idx(4),
            conflict_term: Some(term(2)),
            conflict_index: idx(2),
        }
    );
}

#[test]
fn conflicting_suffix_is_truncated_and_replaced() {
    let mut node = follower_with(&[1, 1, 1], 1);
    let actions = node.step(message(2, 2, append((1, 1), vec![entry(2, 2, 20)], 0)));
    assert_eq!(
        outcome(&actions),
        AppendOutcome::Accepted {
            match_index: idx(2)
        }
    );
    assert_eq!(node.last_log_index(), idx(2));
    assert_eq!(node.entry(idx(2)).unwrap().term, term(2));
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::PersistLogEntries(e) if e[0].index == idx(2)))
    );
}

#[test]
fn duplicate_append_with_entries_already_present_does_not_truncate_a_longer_log() {
    let mut node = follower_with(&[1, 1, 1, 1], 1);
    // A delayed copy of an earlier AppendEntries carrying only entry 2.
    let actions = node.step(message(2, 1, append((1, 1), vec![entry(2, 1, 2)], 0)));
    assert_eq!(
        outcome(&actions),
        AppendOutcome::Accepted {
            match_index: idx(2)
        }
    );
    assert_eq!(node.last_log_index(), idx(4), "entries 3 and 4 survive");
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::PersistLogEntries(_)))
    );
}

#[test]
fn follower_commit_is_min_of_leader_commit_and_last_new_entry() {
    let mut node = follower_with(&[1, 1, 1, 1], 1);
    // The leader has committed 4, but this message only verifies through index 2.
    node.step(message(2, 1, append((1, 1), vec![entry(2, 1, 2)], 4)));
    assert_eq!(node.commit_index(), idx(2));
    node.step(message(2, 1, append((4, 1), vec![], 4)));
    assert_eq!(node.commit_index(), idx(4));
}

#[test]
fn follower_persists_entries_before_acknowledging_them() {
    let mut node = engine(1, &[1, 2, 3]);
    let actions = node.step(message(2, 1, append((0, 0), vec![entry(1, 1, 7)], 0)));
    let persist = actions
        .iter()
        .position(|a| matches!(a, Action::PersistLogEntries(_)));
    let send = actions
        .iter()
        .position(|a| matches!(a, Action::Send { .. }));
    assert!(persist.unwrap() < send.unwrap());
}

#[test]
fn committed_entries_are_applied_in_order_exactly_once() {
    let mut node = follower_with(&[1, 1, 1], 1);
    let first = node.step(message(2, 1, append((3, 1), vec![], 2)));
    assert_eq!(applied_commands(&first), vec![1, 2]);
    let second = node.step(message(2, 1, append((3, 1), vec![], 3)));
    assert_eq!(applied_commands(&second), vec![3]);
    let again = node.step(message(2, 1, append((3, 1), vec![], 3)));
    assert!(applied(&again).is_empty());
    assert_eq!(node.last_applied(), idx(3));
}

#[test]
fn malformed_append_entries_is_dropped_without_effect() {
    let mut node = engine(1, &[1, 2, 3]);
    // A gap between prev_log_index and the first entry.
    let gap = node.step(message(2, 1, append((0, 0), vec![entry(2, 1, 1)], 0)));
    assert!(gap.is_empty() || sends(&gap).is_empty());
    // An entry from a term newer than the sender's.
    let future = node.step(message(2, 1, append((0, 0), vec![entry(1, 5, 1)], 0)));
    assert!(sends(&future).is_empty());
    assert_eq!(node.last_log_index(), idx(0));
}

#[test]
fn leader_appends_a_noop_of_its_term_on_election() {
    let mut net = Net::new(3);
    net.campaign(1);
    let leader = net.engine(1);
    assert_eq!(leader.role(), Role::Leader);
    let last = leader.entry(leader.last_log_index()).unwrap();
    assert_eq!(last.term, leader.current_term());
    assert!(matches!(last.payload, EntryPayload::Noop));
}

#[test]
fn proposal_to_a_follower_is_redirected_to_the_known_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    let actions = net.step(2, Event::ClientProposal(5));
    assert_eq!(
        actions,
        vec![Action::Redirect {
            leader_hint: Some(id(1))
        }]
    );
    let mut lonely = engine(1, &[1, 2, 3]);
    assert_eq!(
        lonely.step(Event::ClientProposal(5)),
        vec![Action::Redirect { leader_hint: None }]
    );
}

#[test]
fn three_node_cluster_replicates_and_commits_proposals() {
    let mut net = Net::new(3);
    net.elect(1);
    for command in 100..110 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    net.heartbeat(1);
    for node in 1..=3 {
        let commands: Vec<u64> = net.applied[&id(node)]
            .iter()
            .filter_map(|e| match e.payload {
                EntryPayload::Command(c) => Some(c),
                _ => None,
            })
            .collect();
        assert_eq!(commands, (100..110).collect::<Vec<_>>(), "node {node}");
    }
}

#[test]
fn batch_proposal_is_one_persist_and_one_append_per_peer() {
    let mut net = Net::new(3);
    net.elect(1);
    let actions = net.step(1, Event::ClientProposalBatch((0..64).collect()));
    let persists: Vec<usize> = actions
        .iter()
        .filter_map(|a| match a {
            Action::PersistLogEntries(entries) => Some(entries.len()),
            _ => None,
        })
        .collect();
    assert_eq!(persists, vec![64]);
    let appends = sends(&actions);
    assert_eq!(appends.len(), 2);
    assert!(
        appends
            .iter()
            .all(|(_, m)| matches!(&m.rpc, Rpc::AppendEntries(ae) if ae.entries.len() == 64))
    );
}

#[test]
fn leader_pipelines_appends_without_waiting_for_acknowledgements() {
    let mut net = Net::new(3);
    net.elect(1);
    let mut appends_to_two = 0;
    for command in 0..5 {
        let actions = net.step(1, Event::ClientProposal(command));
        appends_to_two += sends(&actions)
            .iter()
            .filter(|(to, _)| *to == id(2))
            .count();
    }
    assert_eq!(
        appends_to_two, 5,
        "one AppendEntries per proposal, none waiting for acks"
    );
}

#[test]
fn pipelining_stops_at_the_in_flight_window() {
    let config = EngineConfig {
        max_inflight_appends: 2,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    net.elect(1);
    let mut appends_to_two = 0;
    for command in 0..5 {
        let actions = net.step(1, Event::ClientProposal(command));
        appends_to_two += sends(&actions)
            .iter()
            .filter(|(to, _)| *to == id(2))
            .count();
    }
    assert_eq!(appends_to_two, 2);
    net.deliver_all();
    assert_eq!(
        net.engine(2).last_log_index(),
        net.engine(1).last_log_index(),
        "acks reopen the window"
    );
}

#[test]
fn old_term_entry_is_not_committed_by_replica_count_alone() {
    // Leader of term 3 holds an entry from term 2 at index 2 that a majority already store;
    // it must not commit index 2 until an entry of term 3 reaches a majority.
    let mut leader = engine(1, &[1, 2, 3]);
    leader.step(message(
        2,
        2,
        append((0, 0), vec![entry(1, 1, 1), entry(2, 2, 2)], 1),
    ));
    // The leader of term 2 goes quiet; node 1 outlives it and wins term 3 with node 2's vote.
    win_election_with_vote_from(&mut leader, 2);
    let t = leader.current_term().get();
    assert_eq!(
        leader.last_log_index(),
        idx(3),
        "no-op of the new term at index 3"
    );
    // Follower 2 acknowledges index 2 only: a majority holds the term-2 entry...
    leader.step(message(
        2,
        t,
        Rpc::AppendEntriesResponse(AppendEntriesResponse {
            round: 0,
            outcome: AppendOutcome::Accepted {
                match_index: idx(2),
            },
        }),
    ));
    assert_eq!(
        leader.commit_index(),
        idx(1),
        "...but it is from an older term"
    );
    leader.step(message(
        2,
        t,
        Rpc::AppendEntriesResponse(AppendEntriesResponse {
            round: 0,
            outcome: AppendOutcome::Accepted {
                match_index: idx(3),
            },
        }),
    ));
    assert_eq!(
        leader.commit_index(),
        idx(3),
        "the current-term no-op commits both"
    );
}

#[test]
fn fast_backtracking_skips_a_whole_conflicting_term_per_round_trip() {
    let mut net = Net::new(3);
    net.elect(1);
    // The old leader, cut off, piles up 50 entries nobody else will ever store.
    net.isolate(1);
    for command in 0..50 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    assert_eq!(net.engine(1).last_log_index(), idx(51));
    // The others elect a new leader and commit a few entries of a newer term.
    for _ in 0..60 {
        net.step(2, Event::Tick);
        net.step(3, Event::Tick);
        net.deliver_all();
    }
    let (leader, _) = net
        .leaders()
        .into_iter()
        .find(|(l, _)| *l != id(1))
        .unwrap();
    for command in 100..103 {
        net.step(leader.get(), Event::ClientProposal(command));
    }
    net.deliver_all();
    net.heal();
    let rejected_before = net.engine(1).metrics().append_entries_rejected;
    for _ in 0..4 {
        net.heartbeat(leader.get());
    }
    let rejections = net.engine(1).metrics().append_entries_rejected - rejected_before;
    assert_eq!(
        net.engine(1).last_log_index(),
        net.engine(leader.get()).last_log_index()
    );
    assert_eq!(
        net.engine(1).commit_index(),
        net.engine(leader.get()).commit_index()
    );
    assert!(
        rejections <= 2,
        "caught up after {rejections} rejections, not ~50"
    );
}

#[test]
fn lost_append_is_retransmitted_after_a_heartbeat_interval() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(1, Event::ClientProposal(7));
    net.in_flight.retain(|(to, _)| *to != id(2)); // the append to node 2 is lost
    net.deliver_all();
    assert!(net.engine(2).last_log_index() < net.engine(1).last_log_index());
    net.heartbeat(1);
    net.heartbeat(1);
    assert_eq!(
        net.engine(2).last_log_index(),
        net.engine(1).last_log_index()
    );
}

#[test]
fn stale_rejection_does_not_move_a_caught_up_follower_back() {
    let mut net = Net::new(3);
    net.elect(1);
    for c in 0..3 {
        net.step(1, Event::ClientProposal(c));
    }
    net.deliver_all();
    let t = net.engine(1).current_term().get();
    let before = net.engine(1).follower_progress()[&id(2)];
    net.step(
        1,
        message(
            2,
            t,
            Rpc::AppendEntriesResponse(AppendEntriesResponse {
                round: 0,
                outcome: AppendOutcome::Rejected {
                    prev_log_index: idx(1),
                    conflict_term: None,
                    conflict_index: idx(1),
                },
            }),
        ),
    );
    assert_eq!(net.engine(1).follower_progress()[&id(2)], before);
}

#[test]
fn duplicated_and_reordered_acks_never_lower_match_index() {
    let mut net = Net::new(3);
    net.elect(1);
    let t = net.engine(1).current_term().get();
    for c in 0..4 {
        net.step(1, Event::ClientProposal(c));
    }
    let last = net.engine(1).last_log_index();
    net.in_flight.clear();
    let ack = |m: u64| {
        message(
            2,
            t,
            Rpc::AppendEntriesResponse(AppendEntriesResponse {
                round: 0,
                outcome: AppendOutcome::Accepted {
                    match_index: idx(m),
                },
            }),
        )
    };
    net.step(1, ack(last.get()));
    net.step(1, ack(last.get() - 2));
    net.step(1, ack(last.get()));
    assert_eq!(net.engine(1).follower_progress()[&id(2)].0, last);
}

#[test]
fn leader_ignores_an_append_entries_from_a_rival_claiming_the_same_term() {
    let mut net = Net::new(3);
    net.elect(1);
    let t = net.engine(1).current_term().get();
    let last = net.engine(1).last_log_index();
    let actions = net.step(1, message(2, t, append((0, 0), vec![entry(1, t, 5)], 0)));
    assert!(actions.is_empty());
    assert_eq!(
        net.engine(1).last_log_index(),
        last,
        "a leader never overwrites its own log"
    );
}

/// Found by an outside review. Rule: the engine never panics on an untrusted message (`entries_are_well_formed` exists for
/// exactly this). A follower holding only a snapshot (floor 2, term 3) gets an AppendEntries
/// from the leader of its term whose `prev_log_index` lies below the floor. The entries at or
/// below the floor are dropped unchecked, and the first one above it carries term 1, older
/// than the snapshot's term 3: `RaftLog::append` asserts "terms never decrease" and the
/// engine panics instead of refusing the message.
#[test]
fn append_below_the_snapshot_floor_whose_terms_run_backwards_is_refused_without_a_panic() {
    let mut follower = engine(2, &[1, 2, 3]);
    let noop = LogEntry {
        term: term(3),
        index: idx(1),
        payload: EntryPayload::Noop,
    };
    follower.step(message(
        1,
        3,
        Rpc::AppendEntries(AppendEntries {
            prev_log_index: idx(0),
            prev_log_term: term(0),
            entries: vec![noop, entry(2, 3, 20)],
            leader_commit: idx(2),
            round: 0,
        }),
    ));
    assert_eq!(follower.last_applied(), idx(2));
    follower.step(Event::SnapshotTaken {
        last_included_index: idx(2),
        bytes: Bytes::from_static(b"state"),
    });
    assert_eq!(follower.snapshot_index(), idx(2));

    // Well formed by the engine's own rules: contiguous from prev + 1, terms non-decreasing,
    // none below prev_log_term, none above the sender's term.
    let forged = message(
        1,
        3,
        Rpc::AppendEntries(AppendEntries {
            prev_log_index: idx(1),
            prev_log_term: term(1),
            entries: vec![entry(2, 1, 21), entry(3, 1, 22)],
            leader_commit: idx(2),
            round: 1,
        }),
    );
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| follower.step(forged)));
    assert!(
        outcome.is_ok(),
        "the engine panicked on an untrusted AppendEntries instead of refusing it"
    );
}

/// A follower whose disk lost the tail it had acknowledged (damage its recovery could not
/// tell from a torn write) refuses even the heartbeat anchored at its match point. The leader
/// must take that as the follower holding less than it said and send the entries again;
/// ignoring it as stale leaves the follower refused at the same point for ever.
#[test]
fn follower_that_lost_acknowledged_entries_is_repaired_by_the_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    for command in 0..10 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    net.heartbeat(1);
    net.deliver_all();
    let last = net.engine(1).last_log_index();
    assert_eq!(net.engine(1).follower_progress()[&id(2)].0, last);

    // Node 2 restarts with only the first four entries of what it acknowledged.
    let kept: Vec<LogEntry<u64>> = net.applied[&id(2)].iter().take(4).cloned().collect();
    let mut restarted = engine(2, &[1, 2, 3]);
    restarted
        .recover_from(yggr_core::RecoveredHardState {
            current_term: net.engine(2).current_term(),
            voted_for: net.engine(2).voted_for(),
            snapshot: None,
            log: kept,
        })
        .unwrap();
    net.engines.insert(id(2), restarted);
    net.applied.remove(&id(2));

    for _ in 0..4 {
        net.heartbeat(1);
        net.deliver_all();
    }
    assert_eq!(
        net.engine(2).last_log_index(),
        last,
        "the leader sent the lost entries again"
    );
    assert_eq!(net.engine(1).follower_progress()[&id(2)].0, last);
    assert_eq!(net.engine(2).commit_index(), last);
    assert_eq!(net.applied[&id(2)].len() as u64, last.get());
    assert_eq!(net.engine(1).metrics().followers_lost_acknowledged, 1);
}
