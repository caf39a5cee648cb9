//! Reads (§8), leadership transfer (thesis §3.10), membership changes (§4.3) and snapshots
//! (§7) at the engine level. The simulator covers them under chaos.

use crate::common::*;
use bytes::Bytes;
use yggr_core::{
    Action, ConfigChange, ConfigChangeRejection, EngineConfig, Event, ReadFailure, Role, Rpc,
};

fn read_outcome(actions: &[Action<u64>], read: u64) -> Option<Result<(), ReadFailure>> {
    actions.iter().find_map(|action| match action {
        Action::ReadReady { id } if *id == read => Some(Ok(())),
        Action::ReadFailed { id, reason } if *id == read => Some(Err(*reason)),
        _ => None,
    })
}

fn all_actions(net: &Net, node: u64) -> Vec<Action<u64>> {
    net.actions.get(&id(node)).cloned().unwrap_or_default()
}

/// Three nodes with a 5-tick lease, node 1 elected and heartbeating.
fn leased_cluster_led_by_node_one() -> Net {
    let config = EngineConfig {
        lease_duration_ticks: 5,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    // With leases on, freshly started nodes refuse votes for one election timeout.
    for _ in 0..net.engine(1).config().election_timeout_min_ticks {
        net.step(2, Event::Tick);
        net.step(3, Event::Tick);
    }
    net.in_flight.clear();
    net.elect(1);
    net.heartbeat(1);
    net
}

#[test]
fn read_on_a_follower_fails_with_a_leader_hint() {
    let mut net = Net::new(3);
    net.elect(1);
    let actions = net.step(2, Event::ProposeRead { id: 9 });
    assert_eq!(
        read_outcome(&actions, 9),
        Some(Err(ReadFailure::NotLeader {
            leader_hint: Some(id(1))
        }))
    );
}

#[test]
fn read_index_waits_for_a_heartbeat_round_started_after_the_read() {
    let mut net = Net::new(3);
    net.elect(1);
    let actions = net.step(1, Event::ProposeRead { id: 5 });
    assert_eq!(
        read_outcome(&actions, 5),
        None,
        "not before a majority confirms"
    );
    assert!(sends(&actions).len() >= 2, "the read starts its own round");
    net.deliver_all();
    assert_eq!(read_outcome(&all_actions(&net, 1), 5), Some(Ok(())));
    assert_eq!(net.engine(1).metrics().reads_completed, 1);
}

#[test]
fn acknowledgements_of_rounds_before_the_read_do_not_confirm_it() {
    let mut net = Net::new(3);
    net.elect(1);
    // Hold back the heartbeat round that starts before the read...
    net.heartbeat(1);
    let interval = net.engine(1).config().heartbeat_interval_ticks;
    for _ in 0..interval {
        net.step(1, Event::Tick);
    }
    let early_round: Vec<_> = net.in_flight.drain(..).collect();
    // ...then the read arrives and its own round is lost entirely.
    net.step(1, Event::ProposeRead { id: 7 });
    net.in_flight.clear();
    // The earlier round's acknowledgements arrive now: they prove nothing about the read.
    net.in_flight.extend(early_round);
    net.deliver_all();
    assert_eq!(read_outcome(&all_actions(&net, 1), 7), None);
    net.heartbeat(1);
    assert_eq!(read_outcome(&all_actions(&net, 1), 7), Some(Ok(())));
}

#[test]
fn pending_read_fails_when_the_leader_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(1, Event::ProposeRead { id: 3 });
    net.in_flight.clear();
    let t = net.engine(1).current_term().get();
    let actions = net.step(
        1,
        message(
            2,
            t + 1,
            Rpc::RequestVoteResponse(yggr_core::VoteResponse { granted: false }),
        ),
    );
    assert_eq!(
        read_outcome(&actions, 3),
        Some(Err(ReadFailure::SteppedDown))
    );
}

#[test]
fn lease_serves_reads_without_a_round_trip_while_fresh() {
    let mut net = leased_cluster_led_by_node_one();
    let actions = net.step(1, Event::ProposeRead { id: 1 });
    assert_eq!(read_outcome(&actions, 1), Some(Ok(())));
    assert!(sends(&actions).is_empty());
    // Without acknowledgements the lease runs out and reads need a round again.
    net.isolate(1);
    for _ in 0..8 {
        net.step(1, Event::Tick);
    }
    net.in_flight.clear();
    let actions = net.step(1, Event::ProposeRead { id: 2 });
    assert_eq!(read_outcome(&actions, 2), None);
}

#[test]
fn transfer_sends_timeout_now_once_the_target_is_caught_up_and_it_wins() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(1, Event::TransferLeadership { target: id(2) });
    net.deliver_all();
    assert_eq!(net.engine(2).role(), Role::Leader);
    assert_eq!(net.engine(1).role(), Role::Follower);
}

#[test]
fn leader_refuses_proposals_while_a_transfer_is_pending_and_resumes_after_timeout() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(2);
    net.step(1, Event::ClientProposal(1));
    net.step(1, Event::TransferLeadership { target: id(2) });
    let refused = net.step(1, Event::ClientProposal(2));
    assert_eq!(refused, vec![Action::TransferInProgress { target: id(2) }]);
    for _ in 0..net.engine(1).config().election_timeout_min_ticks {
        net.step(1, Event::Tick);
        net.deliver_all();
    }
    let accepted = net.step(1, Event::ClientProposal(3));
    assert!(
        accepted
            .iter()
            .any(|a| matches!(a, Action::PersistLogEntries(_)))
    );
}

#[test]
fn transfer_to_self_or_a_non_voter_is_refused() {
    let mut net = Net::new(3);
    net.elect(1);
    assert_eq!(
        net.step(1, Event::TransferLeadership { target: id(1) }),
        vec![Action::TransferRejected { target: id(1) }]
    );
    assert_eq!(
        net.step(1, Event::TransferLeadership { target: id(9) }),
        vec![Action::TransferRejected { target: id(9) }]
    );
}

#[test]
fn timeout_now_campaign_is_honoured_by_voters_that_hear_from_the_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    let t = net.engine(1).current_term();
    net.step(1, Event::TransferLeadership { target: id(3) });
    net.deliver_all();
    assert_eq!(net.engine(3).role(), Role::Leader);
    assert_eq!(net.engine(3).current_term(), t.next(), "no pre-vote round");
}

#[test]
fn timeout_now_is_sent_once_per_transfer_however_often_the_target_acknowledges() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(1, Event::ClientProposal(5));
    net.deliver_all();
    let timeout_nows = |actions: &[Action<u64>]| {
        sends(actions)
            .into_iter()
            .filter(|(to, message)| *to == id(3) && message.rpc == Rpc::TimeoutNow)
            .count()
    };
    let started = net.step(1, Event::TransferLeadership { target: id(3) });
    assert_eq!(
        timeout_nows(&started),
        1,
        "the target was caught up already"
    );
    net.in_flight.clear();
    // A duplicated acknowledgement from the target arrives before it has campaigned.
    let term = net.engine(1).current_term();
    let last = net.engine(1).last_log_index();
    let again = net.step(
        1,
        message(
            3,
            term.get(),
            Rpc::AppendEntriesResponse(yggr_core::AppendEntriesResponse {
                round: 0,
                outcome: yggr_core::AppendOutcome::Accepted { match_index: last },
            }),
        ),
    );
    assert_eq!(timeout_nows(&again), 0, "{again:?}");
}

#[test]
fn a_learner_told_to_campaign_by_its_leader_does_not() {
    // Thesis §3.10: TimeoutNow asks a voter to campaign. A learner has no vote to win with;
    // campaigning would only raise terms and disturb the cluster.
    let mut membership = yggr_core::Membership::from_voters([id(1), id(2)]);
    membership.learners.insert(id(3));
    let mut learner = yggr_core::Engine::with_config(
        id(3),
        membership,
        yggr_core::RandomEnv::seeded(3),
        EngineConfig::default(),
    )
    .unwrap();
    learner.step(message(1, 1, append((0, 0), vec![], 0)));
    assert_eq!(learner.leader(), Some(id(1)));
    let actions = learner.step(message(1, 1, Rpc::TimeoutNow));
    assert_eq!(learner.role(), Role::Follower);
    assert_eq!(learner.current_term(), term(1));
    assert!(sends(&actions).is_empty(), "no vote requests: {actions:?}");
}

#[test]
fn second_membership_change_is_refused_while_the_first_is_uncommitted() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::AddLearner(id(4))),
    );
    let refused = net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::AddLearner(id(5))),
    );
    assert_eq!(
        refused,
        vec![Action::ConfigChangeRejected {
            change: ConfigChange::AddLearner(id(5)),
            reason: ConfigChangeRejection::ChangeInProgress,
        }]
    );
    net.deliver_all();
    let accepted = net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::AddLearner(id(5))),
    );
    assert!(
        accepted
            .iter()
            .any(|a| matches!(a, Action::PersistLogEntries(_)))
    );
}

#[test]
fn configuration_takes_effect_when_appended_not_when_committed() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(1);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::AddLearner(id(4))),
    );
    assert!(net.engine(1).membership().is_learner(id(4)));
    assert!(!net.engine(1).committed_membership().is_learner(id(4)));
}

#[test]
fn truncated_configuration_entry_rolls_back_the_membership() {
    // Five nodes: leader 1 appends a change that only node 2 receives; nodes 3, 4 and 5, a
    // majority without it, elect node 3, which then overwrites node 2's suffix.
    let mut net = Net::new(5);
    net.elect(1);
    for other in [3, 4, 5] {
        net.cut.insert((id(1), id(other)));
    }
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::AddLearner(id(6))),
    );
    net.in_flight.retain(|(to, _)| *to == id(2));
    let (to, msg) = net.in_flight.pop_front().unwrap();
    net.engines.get_mut(&to).unwrap().step(Event::Incoming(msg));
    net.in_flight.clear();
    assert!(net.engine(2).membership().is_learner(id(6)));
    let appended_term = net.engine(1).current_term();
    // Nodes 1 and 2 are cut off from the rest while node 3 is elected.
    net.heal();
    for (a, b) in [(1, 3), (1, 4), (1, 5), (2, 3), (2, 4), (2, 5)] {
        net.cut.insert((id(a), id(b)));
        net.cut.insert((id(b), id(a)));
    }
    // Nodes 4 and 5 stop counting leader 1 as live after a minimum election timeout.
    for _ in 0..net.engine(4).config().election_timeout_min_ticks {
        net.step(4, Event::Tick);
        net.step(5, Event::Tick);
    }
    net.in_flight.clear();
    net.elect(3);
    assert!(net.engine(3).current_term() > appended_term);
    assert!(!net.engine(3).membership().contains(id(6)));
    // Node 2 hears from the new leader: the conflicting entry goes, and the change with it.
    net.cut.remove(&(id(2), id(3)));
    net.cut.remove(&(id(3), id(2)));
    net.heartbeat(3);
    net.heartbeat(3);
    assert_eq!(net.engine(2).leader(), Some(id(3)));
    assert!(
        !net.engine(2).membership().is_learner(id(6)),
        "rolled back with the entry"
    );
    assert_eq!(net.engine(2).membership(), net.engine(3).membership());
}

#[test]
fn learner_receives_replication_but_does_not_count_toward_commit() {
    let mut net = Net::new(2);
    net.engines.insert(
        id(3),
        yggr_core::Engine::with_config(
            id(3),
            yggr_core::Membership::empty(),
            yggr_core::RandomEnv::seeded(3),
            EngineConfig::default(),
        )
        .unwrap(),
    );
    net.elect(1);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::AddLearner(id(3))),
    );
    net.deliver_all();
    net.heartbeat(1);
    assert!(net.engine(3).membership().is_learner(id(3)));
    assert_eq!(
        net.engine(3).last_log_index(),
        net.engine(1).last_log_index()
    );
    // With the voter 2 cut off, the learner's acknowledgement alone cannot commit anything.
    net.isolate(2);
    let commit = net.engine(1).commit_index();
    net.step(1, Event::ClientProposal(1));
    net.deliver_all();
    assert_eq!(net.engine(1).commit_index(), commit);
}

#[test]
fn leader_that_removes_itself_steps_down_once_the_change_commits() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(1))),
    );
    assert_eq!(
        net.engine(1).role(),
        Role::Leader,
        "leads until the change commits"
    );
    net.deliver_all();
    assert_eq!(net.engine(1).role(), Role::Follower);
    assert!(!net.engine(1).membership().is_voter(id(1)));
}

#[test]
fn leader_that_removes_itself_hands_over_to_a_caught_up_voter_without_waiting_for_an_election_timeout()
 {
    let mut net = Net::new(3);
    net.elect(1);
    let term = net.engine(1).current_term();
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(1))),
    );
    // No tick passes: only a handover can make another node lead.
    net.deliver_all();
    assert_eq!(net.engine(1).role(), Role::Follower);
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    let (successor, successor_term) = leaders[0];
    assert_ne!(successor, id(1));
    assert_eq!(successor_term, term.next());
}

#[test]
fn new_leader_refuses_membership_change_before_committing_in_its_term() {
    let mut leader = engine(1, &[1, 2, 3]);
    win_election_with_vote_from(&mut leader, 2);
    assert_eq!(
        leader.step(Event::ProposeConfigChange(ConfigChange::AddPeer(id(4)))),
        vec![Action::ConfigChangeRejected {
            change: ConfigChange::AddPeer(id(4)),
            reason: ConfigChangeRejection::LeaderNotReady,
        }]
    );
}

#[test]
fn snapshot_compacts_the_log_and_catches_up_a_lagging_follower_in_chunks() {
    let config = EngineConfig {
        snapshot_chunk_size_bytes: 4,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    net.elect(1);
    net.isolate(3);
    for command in 0..20 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    let applied = net.engine(1).last_applied();
    let actions = net.step(
        1,
        Event::SnapshotTaken {
            last_included_index: applied,
            bytes: Bytes::from_static(b"0123456789"),
        },
    );
    assert!(
        matches!(actions[0], Action::PersistSnapshot { last_included_index, .. } if last_included_index == applied)
    );
    assert_eq!(net.engine(1).snapshot_index(), applied);
    net.heal();
    for _ in 0..6 {
        net.heartbeat(1);
    }
    let follower = all_actions(&net, 3);
    let restored = follower.iter().find_map(|a| match a {
        Action::ApplySnapshot { bytes } => Some(bytes.clone()),
        _ => None,
    });
    assert_eq!(restored, Some(Bytes::from_static(b"0123456789")));
    assert_eq!(net.engine(3).snapshot_index(), applied);
    assert_eq!(
        net.engine(3).last_log_index(),
        net.engine(1).last_log_index()
    );
    assert!(
        net.engine(1).metrics().snapshots_sent >= 3,
        "10 bytes in 4-byte chunks"
    );
    assert_eq!(net.engine(3).metrics().snapshots_installed, 1);
}

#[test]
fn snapshot_past_the_applied_index_is_refused() {
    let mut net = Net::new(3);
    net.elect(1);
    let beyond = net.engine(1).last_applied().next();
    let actions = net.step(
        1,
        Event::SnapshotTaken {
            last_included_index: beyond,
            bytes: Bytes::new(),
        },
    );
    assert!(actions.is_empty());
    assert_eq!(net.engine(1).snapshot_index(), idx(0));
}

#[test]
fn snapshot_hint_fires_each_time_the_applied_band_is_crossed() {
    let config = EngineConfig {
        snapshot_hint_threshold_entries: 4,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(1, config);
    net.elect(1);
    let mut hints = Vec::new();
    for command in 0..10 {
        for action in net.step(1, Event::ClientProposal(command)) {
            if let Action::SnapshotHint {
                last_included_index,
            } = action
            {
                hints.push(last_included_index.get());
            }
        }
    }
    assert_eq!(hints, vec![4, 8]);
}

#[test]
fn check_quorum_leader_cut_off_from_a_majority_steps_down() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(1, Event::ProposeRead { id: 1 });
    net.isolate(1);
    let timeout = net.engine(1).config().election_timeout_min_ticks;
    for _ in 0..2 * timeout {
        net.step(1, Event::Tick);
        net.deliver_all();
    }
    assert_eq!(net.engine(1).role(), Role::Follower);
    assert_eq!(
        read_outcome(&all_actions(&net, 1), 1),
        Some(Err(ReadFailure::SteppedDown))
    );
    assert_eq!(
        net.step(1, Event::ClientProposal(1)),
        vec![Action::Redirect { leader_hint: None }]
    );
}

#[test]
fn check_quorum_keeps_a_leader_that_hears_from_a_majority() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(3);
    for _ in 0..100 {
        net.step(1, Event::Tick);
        net.deliver_all();
    }
    assert_eq!(net.engine(1).role(), Role::Leader);
}

#[test]
fn with_leases_a_freshly_started_node_refuses_votes_for_one_election_timeout() {
    let config = EngineConfig {
        lease_duration_ticks: 5,
        ..EngineConfig::default()
    };
    let mut node = engine_with(2, &[1, 2, 3], config);
    let request = |t: u64| {
        message(
            1,
            t,
            Rpc::RequestVote(yggr_core::VoteRequest {
                last_log_index: idx(0),
                last_log_term: term(0),
                leadership_transfer: false,
            }),
        )
    };
    assert!(
        sends(&node.step(request(1))).is_empty(),
        "it may have acked a lease just before"
    );
    for _ in 0..node.config().election_timeout_min_ticks {
        node.step(Event::Tick);
    }
    let granted = sends(&node.step(request(5))).iter().any(|(_, m)| {
        matches!(
            m.rpc,
            Rpc::RequestVoteResponse(yggr_core::VoteResponse { granted: true })
        )
    });
    assert!(granted);
}

#[test]
fn lease_reads_stop_once_timeout_now_is_sent() {
    let mut net = leased_cluster_led_by_node_one();
    net.cut.insert((id(1), id(2)));
    net.step(1, Event::TransferLeadership { target: id(2) });
    net.in_flight.clear();
    let actions = net.step(1, Event::ProposeRead { id: 4 });
    assert_eq!(
        read_outcome(&actions, 4),
        None,
        "no lease read after TimeoutNow"
    );
}

/// Three nodes led by node 1, which has removed node 3 with every message delivered.
fn three_nodes_led_by_one_removing_three() -> Net {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(1, Event::ClientProposal(7));
    net.deliver_all();
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(3))),
    );
    net.deliver_all();
    net
}

/// A follower the leader removes must receive the entry that removes it, or it goes on
/// believing it is a member (and its host, say, keeps telling clients to retry) for ever. The
/// leader still replicates to it after appending that entry, until it holds it.
#[test]
fn removed_follower_receives_the_entry_that_removes_it() {
    let mut net = three_nodes_led_by_one_removing_three();
    assert!(!net.engine(1).membership().contains(id(3)));
    assert!(
        !net.engine(3).membership().contains(id(3)),
        "node 3 holds the configuration that removed it"
    );
    assert_eq!(
        net.engine(3).last_log_index(),
        net.engine(1).last_log_index()
    );
    // Once it holds it, a heartbeat round tells it the removal committed; once it answered
    // that, the next round stops sending to it.
    net.heartbeat(1);
    assert!(net.engine(3).commit_index() >= net.engine(3).last_log_index());
    net.heartbeat(1);
    assert!(!net.engine(1).follower_progress().contains_key(&id(3)));
    let before = net.actions[&id(1)].len();
    net.heartbeat(1);
    let sent_to_3: Vec<_> = net.actions[&id(1)][before..]
        .iter()
        .filter(|action| matches!(action, Action::Send { to, .. } if *to == id(3)))
        .collect();
    assert!(
        sent_to_3.is_empty(),
        "nothing more goes to the removed node: {sent_to_3:?}"
    );
}

/// A removed follower hears from no leader again. Once a whole election timeout passes without
/// word from one, it must stop naming the leader that removed it: that node may have crashed,
/// been removed in turn or lost its role, and a host redirecting clients to it sends them to a
/// node that cannot serve them, for ever (a removed node never campaigns, so nothing else
/// clears the hint).
#[test]
fn removed_follower_forgets_the_leader_after_an_election_timeout_without_contact() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(3))),
    );
    // An entry after the removal (the kv example appends one that drops the removed member's
    // addresses) carries the removal's commit to node 3, which then knows for certain that it
    // is no voter and never campaigns.
    net.deliver_all();
    net.step(1, Event::ClientProposal(8));
    net.deliver_all();
    assert!(!net.engine(3).committed_membership().contains(id(3)));
    assert_eq!(net.engine(3).leader(), Some(id(1)));
    let timeout_max = EngineConfig::default().election_timeout_max_ticks;
    for _ in 0..timeout_max {
        net.step(3, Event::Tick);
    }
    assert_eq!(
        net.engine(3).role(),
        Role::Follower,
        "a removed node never campaigns"
    );
    assert_eq!(
        net.engine(3).leader(),
        None,
        "no leader is known after an election timeout without contact"
    );
}

/// A removed peer that never answers is not sent to for ever: after a bounded number of
/// heartbeat rounds the leader forgets it.
#[test]
fn unreachable_removed_follower_is_dropped_after_a_bounded_number_of_rounds() {
    let mut net = Net::new(3);
    net.elect(1);
    net.step(1, Event::ClientProposal(7));
    net.deliver_all();
    net.isolate(3);
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(3))),
    );
    net.deliver_all();
    assert!(net.engine(1).follower_progress().contains_key(&id(3)));
    for _ in 0..20 {
        net.heartbeat(1);
    }
    assert!(!net.engine(1).follower_progress().contains_key(&id(3)));
    assert_eq!(net.engine(1).role(), Role::Leader);
}

/// A follower the leader removes must learn that its removal committed, not merely hold the
/// entry: while the removal sits past its commit index it may still be a committed voter (the
/// change could be rolled back), so its election timer keeps firing and it campaigns against
/// the cluster that removed it, every election timeout, for ever.
#[test]
fn removed_follower_learns_its_removal_committed_and_stops_campaigning() {
    let mut net = three_nodes_led_by_one_removing_three();
    let removal = net.engine(1).last_log_index();
    assert!(net.engine(1).commit_index() >= removal);
    for _ in 0..DEPARTURE_ROUNDS_AND_THEN_SOME {
        net.heartbeat(1);
    }
    assert!(!net.engine(1).follower_progress().contains_key(&id(3)));
    assert!(
        net.engine(3).commit_index() >= removal,
        "node 3 holds its removal at {} but knows only {} committed",
        removal.get(),
        net.engine(3).commit_index().get()
    );
    let before = net.actions[&id(3)].len();
    let timeout = net.engine(3).config().election_timeout_max_ticks;
    for _ in 0..timeout * 5 {
        net.step(3, Event::Tick);
    }
    let campaigns: Vec<_> = net.actions[&id(3)][before..]
        .iter()
        .filter(|action| {
            matches!(action, Action::Send { message, .. }
                if matches!(message.rpc, Rpc::RequestPreVote(_) | Rpc::RequestVote(_)))
        })
        .collect();
    assert!(
        campaigns.is_empty(),
        "the removed node campaigns: {campaigns:?}"
    );
}

/// More heartbeat rounds than a departing peer is kept for.
const DEPARTURE_ROUNDS_AND_THEN_SOME: usize = 12;
