//! Places where Raft implementations have shipped bugs, one named test each (those not already
//! covered by the election, replication, features and recovery suites).

use crate::common::*;
use bytes::Bytes;
use yggr_core::{
    Action, ConfigChange, EngineConfig, EntryPayload, Event, InstallSnapshot, LogEntry, Membership,
    RecoveredHardState, Role, Rpc, VoteRequest, VoteResponse,
};

#[test]
fn duplicate_and_out_of_order_snapshot_chunks_are_harmless() {
    let mut node = engine(2, &[1, 2, 3]);
    assert_eq!(
        snapshot_reply(&node.step(message(1, 1, snapshot_chunk(5, 1, 0, b"ab", false)))),
        (2, false)
    );
    // The same chunk again, and a chunk from the future: both answered with where we stand.
    assert_eq!(
        snapshot_reply(&node.step(message(1, 1, snapshot_chunk(5, 1, 0, b"ab", false)))),
        (2, false)
    );
    assert_eq!(
        snapshot_reply(&node.step(message(1, 1, snapshot_chunk(5, 1, 4, b"ef", true)))),
        (2, false)
    );
    assert_eq!(
        node.snapshot_index(),
        idx(0),
        "nothing installed from out-of-order chunks"
    );
    let actions = node.step(message(1, 1, snapshot_chunk(5, 1, 2, b"cd", true)));
    assert_eq!(snapshot_reply(&actions), (4, true));
    let restored = actions.iter().find_map(|a| match a {
        Action::ApplySnapshot { bytes } => Some(bytes.clone()),
        _ => None,
    });
    assert_eq!(restored, Some(Bytes::from_static(b"abcd")));
    assert_eq!(node.snapshot_index(), idx(5));
    assert_eq!(node.commit_index(), idx(5));
}

#[test]
fn delayed_duplicate_of_the_first_chunk_does_not_restart_the_transfer() {
    let mut node = engine(2, &[1, 2, 3]);
    node.step(message(1, 1, snapshot_chunk(5, 1, 0, b"ab", false)));
    node.step(message(1, 1, snapshot_chunk(5, 1, 2, b"cd", false)));
    assert_eq!(
        snapshot_reply(&node.step(message(1, 1, snapshot_chunk(5, 1, 0, b"ab", false)))),
        (4, false),
        "the buffered chunks are kept"
    );
    let actions = node.step(message(1, 1, snapshot_chunk(5, 1, 4, b"ef", true)));
    assert_eq!(snapshot_reply(&actions), (6, true));
    let restored = actions.iter().find_map(|a| match a {
        Action::ApplySnapshot { bytes } => Some(bytes.clone()),
        _ => None,
    });
    assert_eq!(restored, Some(Bytes::from_static(b"abcdef")));
}

#[test]
fn first_chunk_from_a_new_leader_restarts_the_transfer() {
    let mut node = engine(2, &[1, 2, 3]);
    node.step(message(1, 1, snapshot_chunk(5, 1, 0, b"ab", false)));
    // A leader of term 2 sends its own bytes for the same snapshot index: never mixed.
    assert_eq!(
        snapshot_reply(&node.step(message(3, 2, snapshot_chunk(5, 1, 0, b"xy", false)))),
        (2, false)
    );
    let actions = node.step(message(3, 2, snapshot_chunk(5, 1, 2, b"z", true)));
    let restored = actions.iter().find_map(|a| match a {
        Action::ApplySnapshot { bytes } => Some(bytes.clone()),
        _ => None,
    });
    assert_eq!(restored, Some(Bytes::from_static(b"xyz")));
}

#[test]
fn install_snapshot_behind_the_commit_index_is_a_no_op() {
    let mut node = engine(2, &[1, 2, 3]);
    let entries = (1..=6).map(|i| entry(i, 1, i)).collect();
    node.step(message(1, 1, append((0, 0), entries, 6)));
    assert_eq!(node.commit_index(), idx(6));
    let actions = node.step(message(1, 1, snapshot_chunk(4, 1, 0, b"old", true)));
    assert_eq!(
        snapshot_reply(&actions),
        (0, true),
        "acknowledged as already covered"
    );
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::ApplySnapshot { .. }))
    );
    assert_eq!(node.last_log_index(), idx(6));
}

#[test]
fn follower_keeps_its_log_suffix_that_continues_from_the_snapshot() {
    let mut node = engine(2, &[1, 2, 3]);
    let entries = (1..=8).map(|i| entry(i, 1, i)).collect();
    node.step(message(1, 1, append((0, 0), entries, 2)));
    node.step(message(1, 1, snapshot_chunk(5, 1, 0, b"snap", true)));
    assert_eq!(node.snapshot_index(), idx(5));
    assert_eq!(
        node.last_log_index(),
        idx(8),
        "entries 6..=8 match and are kept"
    );
}

#[test]
fn follower_discards_a_log_that_does_not_continue_from_the_snapshot() {
    let mut node = engine(2, &[1, 2, 3]);
    let entries = (1..=8).map(|i| entry(i, 1, i)).collect();
    node.step(message(1, 1, append((0, 0), entries, 2)));
    node.step(message(3, 2, snapshot_chunk(5, 2, 0, b"snap", true)));
    assert_eq!(node.snapshot_index(), idx(5));
    assert_eq!(
        node.last_log_index(),
        idx(5),
        "a conflicting suffix cannot be trusted"
    );
}

#[test]
fn snapshot_chunk_from_a_deposed_leader_is_refused_with_our_term() {
    let mut node = engine(2, &[1, 2, 3]);
    node.step(message(3, 4, append((0, 0), vec![], 0)));
    let actions = node.step(message(1, 2, snapshot_chunk(5, 1, 0, b"stale", true)));
    let (_, reply) = &sends(&actions)[0];
    assert_eq!(reply.term, term(4));
    assert_eq!(node.snapshot_index(), idx(0));
}

#[test]
fn snapshot_restores_learners_as_well_as_voters() {
    // A joiner: it starts from an empty configuration.
    let mut node = engine(4, &[]);
    let membership = Membership {
        voters: [id(1), id(2), id(3)].into_iter().collect(),
        learners: [id(4)].into_iter().collect(),
    };
    node.step(message(
        1,
        1,
        Rpc::InstallSnapshot(InstallSnapshot {
            last_included_index: idx(3),
            last_included_term: term(1),
            membership: membership.clone(),
            offset: 0,
            data: Bytes::from_static(b"s"),
            done: true,
            round: 0,
        }),
    ));
    assert_eq!(node.membership(), &membership);
    assert!(
        node.membership().is_learner(id(4)),
        "it knows it is a learner"
    );
}

#[test]
fn membership_is_recovered_from_configuration_entries_in_the_log() {
    let mut node = engine(1, &[1, 2, 3]);
    let grown = Membership::from_voters([id(1), id(2), id(3), id(4)]);
    node.recover_from(RecoveredHardState {
        current_term: term(2),
        voted_for: None,
        snapshot: None,
        log: vec![
            entry(1, 1, 0),
            LogEntry {
                term: term(2),
                index: idx(2),
                payload: EntryPayload::ConfigChange {
                    change: ConfigChange::AddPeer(id(4)),
                    membership: grown.clone(),
                },
            },
        ],
    })
    .unwrap();
    assert_eq!(node.membership(), &grown);
    assert_eq!(node.membership().quorum_size(), 3);
}

/// Hints only from the live log's length: the applied-entries trigger is off.
fn log_growth_only(max_log_entries: u64) -> EngineConfig {
    EngineConfig {
        snapshot_hint_threshold_entries: 0,
        max_log_entries,
        ..EngineConfig::default()
    }
}

fn hints_a_snapshot(actions: &[Action<u64>]) -> bool {
    actions
        .iter()
        .any(|a| matches!(a, Action::SnapshotHint { .. }))
}

#[test]
fn live_log_growth_past_the_limit_hints_a_snapshot_once_the_log_holds_more_than_the_limit() {
    let mut net = Net::with_config(1, log_growth_only(5));
    net.elect(1);
    let mut hinted_at = Vec::new();
    for command in 0..8 {
        if hints_a_snapshot(&net.step(1, Event::ClientProposal(command))) {
            let engine = net.engine(1);
            hinted_at.push(
                engine
                    .last_log_index()
                    .distance_from(engine.snapshot_index()),
            );
        }
    }
    assert_eq!(
        hinted_at,
        vec![6],
        "one hint, when the log first holds more than 5 entries (not at 5)"
    );
}

#[test]
fn with_both_snapshot_triggers_off_no_snapshot_is_ever_hinted() {
    let mut node = engine_with(1, &[1], log_growth_only(0));
    // From the first step on: the election's no-op is applied too.
    while node.role() != Role::Leader {
        assert!(!hints_a_snapshot(&node.step(Event::Tick)));
    }
    for command in 0..50 {
        assert!(
            !hints_a_snapshot(&node.step(Event::ClientProposal(command))),
            "at {command}"
        );
    }
}

#[test]
fn leader_removed_from_the_configuration_does_not_count_itself_toward_commit() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(1))),
    );
    net.deliver_all();
    assert_eq!(net.engine(1).role(), Role::Follower);
    // A fresh leader among 2 and 3 now needs both of them: 1's acknowledgements mean nothing.
    for _ in 0..60 {
        net.step(2, Event::Tick);
        net.step(3, Event::Tick);
        net.deliver_all();
    }
    let (leader, _) = net.leaders()[0];
    assert!(leader != id(1));
    net.cut
        .insert((leader, if leader == id(2) { id(3) } else { id(2) }));
    let commit = net.engine(leader.get()).commit_index();
    net.step(leader.get(), Event::ClientProposal(1));
    net.deliver_all();
    assert_eq!(net.engine(leader.get()).commit_index(), commit);
}

#[test]
fn removed_server_cannot_disrupt_the_cluster_with_elections() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(3))),
    );
    net.deliver_all();
    net.heartbeat(1);
    let leader_term = net.engine(1).current_term();
    // Node 3 no longer hears heartbeats; it times out again and again.
    for _ in 0..300 {
        net.step(3, Event::Tick);
        net.step(1, Event::Tick);
        net.step(2, Event::Tick);
        net.deliver_all();
    }
    assert_eq!(net.engine(1).role(), Role::Leader);
    assert_eq!(net.engine(1).current_term(), leader_term);
}

#[test]
fn timeout_now_campaign_still_needs_an_up_to_date_log_for_votes() {
    let mut voter = engine(2, &[1, 2, 3]);
    let entries = (1..=4).map(|i| entry(i, 1, i)).collect();
    voter.step(message(1, 1, append((0, 0), entries, 0)));
    // A transfer-flagged campaign bypasses the live-leader rule, not the §5.4.1 log check.
    let actions = voter.step(message(
        3,
        2,
        Rpc::RequestVote(VoteRequest {
            last_log_index: idx(2),
            last_log_term: term(1),
            leadership_transfer: true,
        }),
    ));
    let granted = sends(&actions).iter().any(|(_, m)| {
        matches!(
            m.rpc,
            Rpc::RequestVoteResponse(VoteResponse { granted: true })
        )
    });
    assert!(!granted);
    assert_eq!(
        voter.current_term(),
        term(2),
        "the transfer flag lets the term through"
    );
}

#[test]
fn a_restarted_node_campaigns_while_a_configuration_past_its_commit_index_makes_it_a_voter() {
    // Founding: voter 2, learner 1. Entry 2 promotes 1 (voters {1, 2}) and commits; leader 1
    // then appends its own removal (entry 3, voters {2}) that only it holds, and restarts. Its
    // commit index is not durable, so after the restart the configuration it knows to be
    // committed is the founding one (1 a learner), and its latest one leaves it out. Node 2
    // (voters {1, 2}, log up to 2) needs 1's vote and 1 refuses it: its log is longer. Only
    // node 1 can lead (node 2 alone is a majority of its latest configuration), so a node
    // that is a voter in any configuration it cannot rule out as committed must campaign.
    let founding = Membership {
        voters: [id(2)].into(),
        learners: [id(1)].into(),
    };
    let promoted = Membership::from_voters([id(1), id(2)]);
    let removed = Membership::from_voters([id(2)]);
    let config_entry = |index: u64, change: ConfigChange, membership: &Membership| LogEntry {
        index: idx(index),
        term: term(2),
        payload: EntryPayload::ConfigChange {
            change,
            membership: membership.clone(),
        },
    };
    let promotion = config_entry(2, ConfigChange::PromoteLearner(id(1)), &promoted);
    let removal = config_entry(3, ConfigChange::RemovePeer(id(1)), &removed);
    let mut net = Net::with_membership(&[1, 2], founding, EngineConfig::default());
    let logs = [
        (1, vec![entry(1, 1, 0), promotion.clone(), removal]),
        (2, vec![entry(1, 1, 0), promotion]),
    ];
    for (node, log) in logs {
        net.engines
            .get_mut(&id(node))
            .unwrap()
            .recover_from(RecoveredHardState {
                current_term: term(2),
                voted_for: Some(id(1)),
                snapshot: None,
                log,
            })
            .unwrap();
    }
    assert!(!net.engine(1).membership().is_voter(id(1)));
    assert!(!net.engine(1).committed_membership().is_voter(id(1)));
    for _ in 0..400 {
        net.tick_all();
        net.deliver_all();
    }
    assert_eq!(
        net.engine(2).membership(),
        &removed,
        "the removal reached node 2"
    );
    assert!(net.engine(2).commit_index() >= idx(3), "and committed");
    assert_eq!(
        net.leaders()
            .into_iter()
            .map(|(node, _)| node)
            .collect::<Vec<_>>(),
        vec![id(2)],
        "node 2 leads the one-voter configuration"
    );
}

#[test]
fn a_voter_whose_own_removal_is_uncommitted_still_campaigns_so_the_removal_can_commit() {
    // Voters {1, 2}. Leader 1 appends its own removal while 1 -> 2 is cut, so only 1 holds it,
    // and then loses its leadership. Node 2 (config {1, 2}) needs 1's vote but its log is
    // behind, so 1 refuses it. Only 1 can lead: its latest configuration is {2}, whose one
    // vote it can win. A node that refused to campaign because its latest configuration
    // leaves it out would leave the pair without a leader for ever.
    let mut net = Net::with_membership(
        &[1, 2],
        Membership::from_voters([id(1), id(2)]),
        EngineConfig::default(),
    );
    net.elect(1);
    net.step(1, Event::ClientProposal(7));
    net.deliver_all();
    net.cut.insert((id(1), id(2)));
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(1))),
    );
    net.deliver_all();
    assert!(
        net.engine(1).last_log_index() > net.engine(2).last_log_index(),
        "only node 1 holds its removal"
    );
    // Node 2 hears nothing; node 1 loses check-quorum.
    for _ in 0..100 {
        net.tick_all();
        net.deliver_all();
    }
    net.heal();
    for _ in 0..400 {
        net.tick_all();
        net.deliver_all();
    }
    assert!(
        net.engine(2).membership().voters == [id(2)].into()
            && net.engine(2).commit_index() >= net.engine(1).commit_index(),
        "the removal reached node 2: commit {:?}, membership {:?}",
        net.engine(2).commit_index(),
        net.engine(2).membership()
    );
    assert_eq!(
        net.leaders()
            .into_iter()
            .map(|(node, _)| node)
            .collect::<Vec<_>>(),
        vec![id(2)],
        "node 2 leads the one-voter configuration"
    );
}
