//! Linearizable reads (§8, thesis §6.4) in the corners an outside review found: a leader that
//! removed itself, bursts larger than any internal window, a configuration that shrinks to the
//! leader alone, reads that reach a leader before it is ready, and leases across a term change.

use crate::common::*;
use yggr_core::Bytes;
use yggr_core::{Action, ConfigChange, EngineConfig, Event, ReadFailure, Role, Rpc, VoteRequest};

fn read_outcome(actions: &[Action<u64>], read: u64) -> Option<Result<(), ReadFailure>> {
    actions.iter().find_map(|action| match action {
        Action::ReadReady { id } if *id == read => Some(Ok(())),
        Action::ReadFailed { id, reason } if *id == read => Some(Err(*reason)),
        _ => None,
    })
}

fn outcomes(net: &Net, node: u64, read: u64) -> Vec<Result<(), ReadFailure>> {
    net.actions
        .get(&id(node))
        .into_iter()
        .flatten()
        .filter_map(|action| read_outcome(std::slice::from_ref(action), read))
        .collect()
}

fn served(net: &Net, node: u64) -> usize {
    net.actions
        .get(&id(node))
        .into_iter()
        .flatten()
        .filter(|action| matches!(action, Action::ReadReady { .. }))
        .count()
}

/// Proposes `change` at `leader` and runs the cluster until it commits there.
fn commit_change(net: &mut Net, leader: u64, change: ConfigChange) {
    let actions = net.step(leader, Event::ProposeConfigChange(change));
    assert!(
        !actions
            .iter()
            .any(|action| matches!(action, Action::ConfigChangeRejected { .. })),
        "{change:?} refused"
    );
    net.deliver_all();
    net.heartbeat(leader);
}

/// Review finding B: in {1,2}, leader 1 proposes its own removal; 2 stores it but the answer
/// is lost, elects itself as the only voter and commits. Leader 1 is now in a configuration
/// whose only voter is 2: it must not treat itself as a one-node majority, neither for reads
/// nor for check-quorum.
#[test]
fn leader_that_removed_itself_needs_the_remaining_voters_to_serve_reads_and_stay_leader() {
    let mut net = Net::new(2);
    net.elect(1);
    net.cut.insert((id(2), id(1)));
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(1))),
    );
    net.deliver_all();
    assert!(!net.engine(2).membership().is_voter(id(1)));
    // Node 2, alone in its configuration, elects itself and commits a write.
    for _ in 0..100 {
        net.step(2, Event::Tick);
        if net.engine(2).role() == Role::Leader {
            break;
        }
    }
    assert_eq!(net.engine(2).role(), Role::Leader);
    net.step(2, Event::ClientProposal(42));
    assert_eq!(net.engine(1).role(), Role::Leader, "1 has not heard of it");

    let actions = net.step(1, Event::ProposeRead { id: 7 });
    assert_eq!(
        read_outcome(&actions, 7),
        None,
        "a stale read served at once"
    );
    net.deliver_all();
    assert!(
        outcomes(&net, 1, 7).is_empty(),
        "2 never acknowledges term 1"
    );
    // Check-quorum: no acknowledgement from the only voter for a timeout deposes node 1.
    for _ in 0..net.engine(1).config().election_timeout_min_ticks * 2 {
        net.step(1, Event::Tick);
        net.deliver_all();
    }
    assert_ne!(net.engine(1).role(), Role::Leader);
    assert_eq!(outcomes(&net, 1, 7), vec![Err(ReadFailure::SteppedDown)]);
}

/// Review finding C: a burst of reads before any acknowledgement returns must neither depose a
/// healthy leader nor be lost; and it costs one round per batch, not a round per read.
#[test]
fn read_burst_larger_than_any_window_keeps_the_leader_and_serves_every_read() {
    let mut net = Net::new(3);
    net.elect(1);
    let mut heartbeats = 0;
    for read in 0..1_000u64 {
        let actions = net.step(1, Event::ProposeRead { id: read });
        heartbeats += sends(&actions).len();
    }
    assert!(
        heartbeats <= 2,
        "one round for the whole burst, not one per read ({heartbeats} messages)"
    );
    // One hop there, one back.
    net.deliver_hop();
    net.deliver_hop();
    assert_eq!(
        served(&net, 1),
        1,
        "the first round confirms the first read"
    );
    net.deliver_hop();
    net.deliver_hop();
    // The reads that arrived while the first round was out share the second one.
    assert_eq!(served(&net, 1), 1_000);
    // Sustained load: many reads every tick, for several election timeouts.
    let mut next = 1_000u64;
    for _ in 0..100 {
        for _ in 0..300 {
            net.step(1, Event::ProposeRead { id: next });
            next += 1;
        }
        net.tick_all();
        net.deliver_all();
        assert_eq!(net.engine(1).role(), Role::Leader);
    }
    net.heartbeat(1);
    assert_eq!(served(&net, 1) as u64, next);
    assert_eq!(net.engine(1).metrics().reads_failed, 0);
}

/// Review finding F: a read waiting for acknowledgements from voters that are then removed
/// completes once the configuration shrinks to the leader alone.
#[test]
fn pending_read_completes_when_the_configuration_shrinks_to_the_leader_alone() {
    let mut net = Net::new(3);
    net.elect(1);
    commit_change(&mut net, 1, ConfigChange::RemovePeer(id(3)));
    net.isolate(2);
    net.step(1, Event::ProposeRead { id: 5 });
    net.deliver_all();
    assert!(outcomes(&net, 1, 5).is_empty(), "2 is unreachable");
    net.step(
        1,
        Event::ProposeConfigChange(ConfigChange::RemovePeer(id(2))),
    );
    assert_eq!(outcomes(&net, 1, 5), vec![Ok(())]);
}

/// A read that reaches a new leader before its no-op commits waits for that commit instead of
/// failing: the read index is the commit index once the leader is ready.
#[test]
fn read_before_the_new_leader_commits_its_noop_waits_for_it_and_is_then_served() {
    let mut leader = engine(1, &[1, 2, 3]);
    win_election_with_vote_from(&mut leader, 2);
    let actions = leader.step(Event::ProposeRead { id: 1 });
    assert_eq!(read_outcome(&actions, 1), None, "held, not failed");
    let noop = leader.last_log_index();
    let term_now = leader.current_term().get();
    let acked = leader.step(message(
        2,
        term_now,
        Rpc::AppendEntriesResponse(yggr_core::AppendEntriesResponse {
            round: 1,
            outcome: yggr_core::AppendOutcome::Accepted { match_index: noop },
        }),
    ));
    assert_eq!(leader.commit_index(), noop);
    assert_eq!(read_outcome(&acked, 1), Some(Ok(())));
}

/// A proposal during a leadership transfer is refused with its own reason, naming the target.
#[test]
fn proposal_during_a_transfer_is_refused_naming_the_target() {
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(2);
    net.step(1, Event::ClientProposal(1));
    net.step(1, Event::TransferLeadership { target: id(2) });
    let refused = net.step(1, Event::ClientProposal(2));
    assert_eq!(refused, vec![Action::TransferInProgress { target: id(2) }]);
}

/// Review finding D, at the leader: with leases on and pre-vote off, leader 2 holds a lease
/// backed by node 1's acknowledgement. Node 3, partitioned, reached a higher term; a message
/// from it moves node 1 to that term without a leader. Node 3 must still not win node 1's vote
/// while node 2's lease may be in use.
#[test]
fn lease_read_is_never_served_after_another_leader_was_elected() {
    let config = EngineConfig {
        pre_vote: false,
        lease_duration_ticks: 5,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    for _ in 0..net.engine(1).config().election_timeout_min_ticks {
        net.tick_all();
    }
    net.in_flight.clear();
    net.elect(2);
    net.heartbeat(2);
    // Node 3 is cut off and campaigns alone up to term 4. Its term-4 vote request to node 1
    // is held up in the network.
    net.isolate(3);
    while net.engine(3).current_term().get() < 4 {
        net.step(3, Event::Tick);
    }
    let delayed_vote_request = net
        .in_flight
        .iter()
        .find(|(to, message)| *to == id(1) && message.term == term(4))
        .cloned()
        .expect("node 3 asked node 1 for its term-4 vote");
    net.in_flight.clear();
    net.heal();
    net.cut.insert((id(3), id(2)));
    net.cut.insert((id(2), id(3)));
    let stale_term = net.engine(2).current_term().get();
    let (last_index, last_term) = (
        net.engine(1).last_log_index().get(),
        net.engine(1).last_log_term().get(),
    );
    // An old vote request of node 1's, duplicated and delayed, reaches node 3: its refusal
    // carries term 4 back to node 1.
    net.in_flight.push_back((
        id(3),
        yggr_core::Message {
            from: id(1),
            term: term(stale_term),
            rpc: Rpc::RequestVote(VoteRequest {
                last_log_index: idx(last_index),
                last_log_term: term(last_term),
                leadership_transfer: false,
            }),
        },
    ));
    net.deliver_all();
    assert_eq!(net.engine(1).current_term(), term(4));
    // Now node 3's delayed request arrives, in node 1's new term.
    net.in_flight.push_back(delayed_vote_request);
    net.deliver_all();
    // From now on node 2 hears nobody: it keeps believing it leads until its clock says
    // otherwise. Clocks run in lockstep.
    net.cut.insert((id(1), id(2)));
    let mut new_leader_at = None;
    for tick in 0..net.engine(3).config().election_timeout_max_ticks * 4 {
        net.tick_all();
        net.deliver_all();
        let lease_read = net.step(2, Event::ProposeRead { id: tick });
        net.deliver_all();
        let rival = [1, 3]
            .into_iter()
            .find(|node| net.engine(*node).role() == Role::Leader);
        if let Some(rival) = rival {
            new_leader_at.get_or_insert(tick);
            assert_ne!(
                read_outcome(&lease_read, tick),
                Some(Ok(())),
                "node 2 served a lease read at tick {tick} while node {rival} leads"
            );
        }
    }
    assert!(
        new_leader_at.is_some(),
        "a new leader is elected in the end"
    );
}

/// Found by the simulator: a follower refusing a long-delayed AppendEntries of its leader's
/// earlier reign echoed that request's round in an answer carrying the follower's current
/// term. The old sender, leading that term by then, took it for an acknowledgement of its
/// own round of the same number and confirmed reads that no majority had seen.
#[test]
fn refusal_of_a_stale_term_request_acknowledges_no_round_of_the_new_reign() {
    let mut follower = engine(2, &[1, 2, 3]);
    follower.step(message(3, 5, append((0, 0), vec![], 0)));
    let refusal = follower.step(message(
        1,
        2,
        Rpc::AppendEntries(yggr_core::AppendEntries {
            prev_log_index: idx(0),
            prev_log_term: term(0),
            entries: vec![],
            leader_commit: idx(0),
            round: 31,
        }),
    ));
    let (_, reply) = &sends(&refusal)[0];
    assert_eq!(reply.term, term(5), "the refusal carries the newer term");
    assert_eq!(
        reply.rpc,
        Rpc::AppendEntriesResponse(yggr_core::AppendEntriesResponse {
            round: 0,
            outcome: yggr_core::AppendOutcome::StaleTerm,
        })
    );

    // At the leader: a read waits on its round; a stale-term refusal in the leader's own term
    // confirms nothing, whatever round it names.
    let mut net = Net::new(3);
    net.elect(1);
    net.isolate(1);
    net.step(1, Event::ProposeRead { id: 4 });
    net.in_flight.clear();
    let leader_term = net.engine(1).current_term().get();
    for from in [2, 3] {
        let actions = net.step(
            1,
            message(
                from,
                leader_term,
                Rpc::AppendEntriesResponse(yggr_core::AppendEntriesResponse {
                    round: 1_000,
                    outcome: yggr_core::AppendOutcome::StaleTerm,
                }),
            ),
        );
        assert_eq!(read_outcome(&actions, 4), None);
    }
    assert!(outcomes(&net, 1, 4).is_empty());
}

/// Found by an outside review. Rule: a snapshot is sent only to a follower that needs entries the leader compacted (the
/// contract on `send_heartbeat_at`). A freshly elected leader does not yet know its followers'
/// match points (`match_index` is 0 until they answer). A read arriving then starts a read
/// round, whose heartbeats are anchored at `match_index` = 0; with a compacted log index 0
/// has no term, so every follower is switched to a snapshot transfer although both hold the
/// leader's whole log: appends to them stop until the transfer ends, and a follower whose
/// commit index is below the snapshot's (node 3 here, once the chunk overtakes the probe)
/// installs the snapshot and reloads its state machine from it.
#[test]
fn read_rounds_probe_followers_whose_match_point_is_unknown_instead_of_sending_snapshots() {
    let mut net = Net::new(3);
    net.elect(1);
    for command in 0..5 {
        net.step(1, Event::ClientProposal(command));
    }
    net.deliver_all();
    // Node 2 learns the commit index; node 3 holds every entry but not the commit.
    net.cut.insert((id(1), id(3)));
    net.heartbeat(1);
    net.heal();
    let applied = net.engine(2).last_applied();
    assert_eq!(applied, net.engine(1).commit_index());
    assert_eq!(
        net.engine(3).last_log_index(),
        net.engine(1).last_log_index()
    );
    net.step(
        2,
        Event::SnapshotTaken {
            last_included_index: applied,
            bytes: Bytes::from_static(b"state"),
        },
    );
    // Leadership moves to node 2 (a transfer, so nobody's election timer matters).
    net.step(1, Event::TransferLeadership { target: id(2) });
    for _ in 0..3 {
        net.deliver_hop();
    }
    assert_eq!(net.engine(2).role(), Role::Leader);

    let actions = net.step(2, Event::ProposeRead { id: 7 });
    let snapshot_targets: Vec<_> = sends(&actions)
        .into_iter()
        .filter(|(_, message)| matches!(message.rpc, Rpc::InstallSnapshot(_)))
        .map(|(to, _)| to)
        .collect();
    // The network reorders: the chunks overtake the new leader's probes.
    let (chunks, rest): (Vec<_>, Vec<_>) = net
        .in_flight
        .drain(..)
        .partition(|(_, message)| matches!(message.rpc, Rpc::InstallSnapshot(_)));
    net.in_flight.extend(chunks);
    net.in_flight.extend(rest);
    net.deliver_all();
    let node_3_reloaded = net
        .actions
        .get(&id(3))
        .into_iter()
        .flatten()
        .any(|action| matches!(action, Action::ApplySnapshot { .. }));
    assert!(
        snapshot_targets.is_empty() && !node_3_reloaded,
        "a read at the new leader sent InstallSnapshot to {snapshot_targets:?}, whose logs \
         are complete; node 3 replaced its state machine from it: {node_3_reloaded}"
    );
}

#[test]
fn a_read_round_asks_the_voters_and_not_the_learners() {
    // A learner's answer cannot confirm leadership, so asking it would only cost a message.
    let mut membership = yggr_core::Membership::from_voters([id(1), id(2), id(3)]);
    membership.learners.insert(id(4));
    let mut net = Net::with_membership(&[1, 2, 3, 4], membership, EngineConfig::default());
    net.elect(1);
    net.step(1, Event::ClientProposal(7));
    net.deliver_all();
    let actions = net.step(1, Event::ProposeRead { id: 1 });
    let asked: std::collections::BTreeSet<_> =
        sends(&actions).into_iter().map(|(to, _)| to).collect();
    assert_eq!(asked, [id(2), id(3)].into_iter().collect());
}
