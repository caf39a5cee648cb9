//! Figure 2 rules for elections (§5.2, §5.4.1) and pre-vote (thesis §9.6), one test per rule.

use crate::common::*;
use yggr_core::{
    Action, EngineConfig, Event, Membership, NodeId, Role, Rpc, VoteRequest, VoteResponse,
};

fn no_pre_vote() -> EngineConfig {
    EngineConfig {
        pre_vote: false,
        ..EngineConfig::default()
    }
}

fn vote_request(last_index: u64, last_term: u64) -> Rpc<u64> {
    Rpc::RequestVote(VoteRequest {
        last_log_index: idx(last_index),
        last_log_term: term(last_term),
        leadership_transfer: false,
    })
}

fn pre_vote_request(last_index: u64, last_term: u64) -> Rpc<u64> {
    Rpc::RequestPreVote(VoteRequest {
        last_log_index: idx(last_index),
        last_log_term: term(last_term),
        leadership_transfer: false,
    })
}

/// Ticks past the minimum election timeout, so the node no longer counts its leader as live.
fn outlive_leader(node: &mut yggr_core::Engine<u64>) {
    for _ in 0..node.config().election_timeout_min_ticks {
        node.step(Event::Tick);
    }
}

fn vote_granted(actions: &[Action<u64>]) -> Option<bool> {
    sends(actions)
        .into_iter()
        .find_map(|(_, message)| match message.rpc {
            Rpc::RequestVoteResponse(VoteResponse { granted }) => Some(granted),
            Rpc::RequestPreVoteResponse(VoteResponse { granted }) => Some(granted),
            _ => None,
        })
}

#[test]
fn election_timeout_fires_within_the_configured_range() {
    for seed in 1..=20 {
        let mut node = engine_with(seed, &[seed, 100], no_pre_vote());
        let mut ticks = 0;
        while node.role() == Role::Follower {
            node.step(Event::Tick);
            ticks += 1;
            assert!(ticks < 20, "timeout must be below the exclusive maximum");
        }
        assert!(ticks >= 10, "timeout {ticks} below the minimum");
    }
}

#[test]
fn candidate_increments_term_votes_for_itself_and_requests_votes() {
    let mut node = engine_with(1, &[1, 2, 3], no_pre_vote());
    let actions = tick_until_role_changes(&mut node, 100);
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.current_term(), term(1));
    assert_eq!(node.voted_for(), Some(id(1)));
    let targets: Vec<NodeId> = sends(&actions).iter().map(|(to, _)| *to).collect();
    assert_eq!(targets, vec![id(2), id(3)]);
    assert!(
        sends(&actions)
            .iter()
            .all(|(_, m)| matches!(m.rpc, Rpc::RequestVote(_)) && m.term == term(1))
    );
}

#[test]
fn candidate_persists_term_and_vote_before_requesting_votes() {
    let mut node = engine_with(1, &[1, 2, 3], no_pre_vote());
    let actions = tick_until_role_changes(&mut node, 100);
    let persist = actions
        .iter()
        .position(|a| {
            matches!(a, Action::PersistHardState { current_term, voted_for }
            if *current_term == term(1) && *voted_for == Some(id(1)))
        })
        .expect("hard state persisted");
    let first_send = actions
        .iter()
        .position(|a| matches!(a, Action::Send { .. }))
        .unwrap();
    assert!(persist < first_send);
}

#[test]
fn candidate_with_votes_from_a_majority_becomes_leader() {
    let mut node = engine_with(1, &[1, 2, 3], no_pre_vote());
    tick_until_role_changes(&mut node, 100);
    node.step(message(
        2,
        1,
        Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.leader(), Some(id(1)));
}

#[test]
fn candidate_refused_by_a_majority_returns_to_follower() {
    let mut node = engine_with(1, &[1, 2, 3], no_pre_vote());
    tick_until_role_changes(&mut node, 100);
    node.step(message(
        2,
        1,
        Rpc::RequestVoteResponse(VoteResponse { granted: false }),
    ));
    assert_eq!(
        node.role(),
        Role::Candidate,
        "one refusal is not a majority"
    );
    node.step(message(
        3,
        1,
        Rpc::RequestVoteResponse(VoteResponse { granted: false }),
    ));
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.current_term(), term(1));
}

#[test]
fn candidate_that_times_out_starts_a_new_election_in_a_new_term() {
    let mut node = engine_with(1, &[1, 2, 3], no_pre_vote());
    tick_until_role_changes(&mut node, 100);
    for _ in 0..20 {
        node.step(Event::Tick);
    }
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.current_term(), term(2));
}

#[test]
fn candidate_recognises_a_leader_of_its_term_through_append_entries() {
    let mut node = engine_with(1, &[1, 2, 3], no_pre_vote());
    tick_until_role_changes(&mut node, 100);
    node.step(message(2, 1, append((0, 0), vec![], 0)));
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.leader(), Some(id(2)));
    assert_eq!(node.current_term(), term(1));
}

#[test]
fn vote_refused_when_candidate_term_is_stale() {
    let mut node = engine(1, &[1, 2, 3]);
    node.step(message(2, 3, vote_request(0, 0)));
    let actions = node.step(message(3, 2, vote_request(5, 2)));
    assert_eq!(vote_granted(&actions), Some(false));
    let (_, reply) = &sends(&actions)[0];
    assert_eq!(reply.term, term(3), "the refusal carries the newer term");
}

#[test]
fn vote_granted_at_most_once_per_term() {
    let mut node = engine(1, &[1, 2, 3]);
    assert_eq!(
        vote_granted(&node.step(message(2, 1, vote_request(0, 0)))),
        Some(true)
    );
    assert_eq!(
        vote_granted(&node.step(message(3, 1, vote_request(0, 0)))),
        Some(false)
    );
    assert_eq!(
        vote_granted(&node.step(message(2, 1, vote_request(0, 0)))),
        Some(true),
        "a repeated request from the same candidate is granted again"
    );
    assert_eq!(node.voted_for(), Some(id(2)));
}

#[test]
fn vote_refused_when_candidate_log_has_an_older_last_term() {
    let mut node = engine(1, &[1, 2, 3]);
    node.step(message(2, 2, append((0, 0), vec![entry(1, 2, 10)], 0)));
    outlive_leader(&mut node);
    // Long log, but from an older term: §5.4.1 compares last terms first.
    let actions = node.step(message(3, 5, vote_request(9, 1)));
    assert_eq!(node.current_term(), term(5));
    assert_eq!(vote_granted(&actions), Some(false));
}

#[test]
fn vote_refused_when_candidate_log_is_shorter_in_the_same_last_term() {
    let mut node = engine(1, &[1, 2, 3]);
    node.step(message(
        2,
        2,
        append((0, 0), vec![entry(1, 2, 10), entry(2, 2, 11)], 0),
    ));
    outlive_leader(&mut node);
    assert_eq!(
        vote_granted(&node.step(message(3, 5, vote_request(1, 2)))),
        Some(false)
    );
    assert_eq!(
        vote_granted(&node.step(message(3, 5, vote_request(2, 2)))),
        Some(true)
    );
}

#[test]
fn vote_is_persisted_before_it_is_sent() {
    let mut node = engine(1, &[1, 2, 3]);
    let actions = node.step(message(2, 4, vote_request(0, 0)));
    assert!(matches!(
        actions[0],
        Action::PersistHardState { current_term, voted_for: Some(voted) }
            if current_term == term(4) && voted == id(2)
    ));
    assert!(matches!(actions[1], Action::Send { .. }));
    assert_eq!(
        actions.len(),
        2,
        "term bump and vote share one hard-state write"
    );
}

#[test]
fn higher_term_in_a_response_makes_a_leader_step_down() {
    let mut net = Net::new(3);
    net.elect(1);
    let leader_term = net.engine(1).current_term();
    net.step(
        1,
        message(
            2,
            leader_term.get() + 1,
            Rpc::RequestVoteResponse(VoteResponse { granted: false }),
        ),
    );
    assert_eq!(net.engine(1).role(), Role::Follower);
    assert_eq!(net.engine(1).current_term().get(), leader_term.get() + 1);
    assert_eq!(net.engine(1).metrics().higher_term_stepdowns, 1);
}

#[test]
fn stale_vote_responses_are_ignored() {
    let mut node = engine_with(1, &[1, 2, 3], no_pre_vote());
    tick_until_role_changes(&mut node, 100);
    for _ in 0..20 {
        node.step(Event::Tick);
    }
    assert_eq!(node.current_term(), term(2));
    // A grant from term 1 must not count toward the term-2 election.
    node.step(message(
        2,
        1,
        Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(node.role(), Role::Candidate);
}

#[test]
fn follower_of_a_live_leader_ignores_a_disruptive_vote_request_and_keeps_its_term() {
    let mut net = Net::new(3);
    net.elect(1);
    let leader_term = net.engine(1).current_term().get();
    let actions = net.step(
        2,
        message(3, leader_term + 5, vote_request(100, leader_term)),
    );
    assert!(sends(&actions).is_empty());
    assert_eq!(
        net.engine(2).current_term().get(),
        leader_term,
        "thesis §4.2.3: no term update"
    );
}

#[test]
fn pre_vote_request_never_changes_the_voters_term_or_vote() {
    let mut node = engine(1, &[1, 2, 3]);
    let actions = node.step(message(2, 7, pre_vote_request(0, 0)));
    assert_eq!(vote_granted(&actions), Some(true));
    assert_eq!(node.current_term(), term(0));
    assert_eq!(node.voted_for(), None);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::PersistHardState { .. }))
    );
    let (_, reply) = &sends(&actions)[0];
    assert_eq!(reply.term, term(7), "a grant echoes the probed term");
}

#[test]
fn pre_vote_starts_without_changing_term_and_wins_into_a_real_election() {
    let mut node = engine(1, &[1, 2, 3]);
    let actions = tick_until_role_changes(&mut node, 100);
    assert_eq!(node.role(), Role::PreCandidate);
    assert_eq!(node.current_term(), term(0));
    assert!(
        sends(&actions)
            .iter()
            .all(|(_, m)| matches!(m.rpc, Rpc::RequestPreVote(_)) && m.term == term(1))
    );
    node.step(message(
        2,
        1,
        Rpc::RequestPreVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(node.role(), Role::Candidate);
    assert_eq!(node.current_term(), term(1));
}

#[test]
fn pre_candidate_that_loses_stays_a_follower_at_its_old_term() {
    let mut node = engine(1, &[1, 2, 3]);
    tick_until_role_changes(&mut node, 100);
    node.step(message(
        2,
        0,
        Rpc::RequestPreVoteResponse(VoteResponse { granted: false }),
    ));
    node.step(message(
        3,
        0,
        Rpc::RequestPreVoteResponse(VoteResponse { granted: false }),
    ));
    assert_eq!(node.role(), Role::Follower);
    assert_eq!(node.current_term(), term(0));
    assert_eq!(node.metrics().elections_started, 0);
}

#[test]
fn pre_vote_refused_while_the_voter_hears_from_a_live_leader() {
    let mut net = Net::new(3);
    net.elect(1);
    let t = net.engine(1).current_term().get();
    let last = net.engine(2).last_log_index().get();
    let actions = net.step(2, message(3, t + 1, pre_vote_request(last, t)));
    assert_eq!(vote_granted(&actions), Some(false));
}

#[test]
fn rejoining_node_cannot_disrupt_a_healthy_cluster() {
    let mut net = Net::new(3);
    net.elect(1);
    let leader_term = net.engine(1).current_term();
    net.isolate(3);
    for _ in 0..200 {
        net.tick_all();
        net.deliver_all();
    }
    assert_ne!(net.engine(3).role(), Role::Leader);
    assert_eq!(
        net.engine(3).current_term(),
        leader_term,
        "pre-vote kept its term"
    );
    net.heal();
    for _ in 0..50 {
        net.tick_all();
        net.deliver_all();
    }
    assert_eq!(net.engine(1).role(), Role::Leader);
    assert_eq!(net.engine(1).current_term(), leader_term);
}

#[test]
fn learner_answers_votes_by_the_usual_rules_but_never_campaigns() {
    let membership = Membership {
        voters: [id(1), id(2)].into_iter().collect(),
        learners: [id(3)].into_iter().collect(),
    };
    let mut learner: yggr_core::Engine<u64> = yggr_core::Engine::with_config(
        id(3),
        membership,
        yggr_core::RandomEnv::seeded(3),
        EngineConfig::default(),
    )
    .unwrap();
    // The candidate's configuration decides whether this vote counts, not the learner's own.
    assert_eq!(
        vote_granted(&learner.step(message(2, 2, pre_vote_request(0, 0)))),
        Some(true)
    );
    assert_eq!(
        vote_granted(&learner.step(message(1, 1, vote_request(0, 0)))),
        Some(true)
    );
    for _ in 0..200 {
        let actions = learner.step(Event::Tick);
        assert!(sends(&actions).is_empty(), "a learner never campaigns");
    }
    assert_eq!(learner.role(), Role::Follower);
}

#[test]
fn candidate_does_not_count_the_vote_of_a_learner_in_its_own_configuration() {
    let membership = Membership {
        voters: [id(1), id(2), id(3)].into_iter().collect(),
        learners: [id(4)].into_iter().collect(),
    };
    let config = EngineConfig {
        pre_vote: false,
        ..EngineConfig::default()
    };
    let mut candidate: yggr_core::Engine<u64> =
        yggr_core::Engine::with_config(id(1), membership, yggr_core::RandomEnv::seeded(1), config)
            .unwrap();
    tick_until_role_changes(&mut candidate, 100);
    assert_eq!(candidate.role(), Role::Candidate);
    let campaign = candidate.current_term().get();
    candidate.step(message(
        4,
        campaign,
        Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(
        candidate.role(),
        Role::Candidate,
        "a learner's vote is not counted"
    );
    candidate.step(message(
        2,
        campaign,
        Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(candidate.role(), Role::Leader);
}

/// Review finding A: voters {1,2} and learner 3; the promotion of 3 commits on {1,2} while the
/// link 1→3 is cut, then leader 1 dies. Node 2 needs the vote of 3, which still believes it is
/// a learner; it must be given.
#[test]
fn promoted_learner_that_missed_its_promotion_still_votes_so_a_leader_is_elected() {
    let membership = Membership {
        voters: [id(1), id(2)].into_iter().collect(),
        learners: [id(3)].into_iter().collect(),
    };
    let mut net = Net::with_membership(&[1, 2, 3], membership, EngineConfig::default());
    net.elect(1);
    net.cut.insert((id(1), id(3)));
    net.step(
        1,
        Event::ProposeConfigChange(yggr_core::ConfigChange::PromoteLearner(id(3))),
    );
    net.deliver_all();
    net.heartbeat(1);
    assert!(net.engine(2).committed_membership().is_voter(id(3)));
    assert!(net.engine(3).membership().is_learner(id(3)), "3 missed it");
    net.kill(1);
    for _ in 0..2_000 {
        net.tick_all();
        net.deliver_all();
        if !net.leaders().is_empty() {
            break;
        }
    }
    let leaders = net.leaders();
    assert_eq!(leaders.len(), 1, "2 and 3 elect a leader");
    assert_eq!(
        leaders[0].0,
        id(2),
        "3 cannot campaign until it learns it votes"
    );
    net.heartbeat(2);
    assert!(
        net.engine(3).membership().is_voter(id(3)),
        "and 3 learns it"
    );
}

/// Review finding D, at the voter: a follower that acknowledged a leader keeps refusing votes
/// for a minimum election timeout even after some other message moved it to a newer term and
/// made it forget that leader. A lease on the old leader relies on exactly this refusal.
#[test]
fn voter_refuses_votes_for_a_minimum_timeout_after_hearing_from_a_leader_even_in_a_newer_term() {
    let config = EngineConfig {
        pre_vote: false,
        lease_duration_ticks: 5,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    // Leases on: freshly started nodes refuse votes for one election timeout.
    for _ in 0..net.engine(1).config().election_timeout_min_ticks {
        net.step(1, Event::Tick);
        net.step(3, Event::Tick);
    }
    net.in_flight.clear();
    net.elect(2);
    net.heartbeat(2);
    let (last_index, last_term) = (
        net.engine(3).last_log_index().get() + 5,
        net.engine(3).last_log_term().get(),
    );
    // A refusal from a node at term 4 moves node 1 there, leaderless.
    net.step(
        1,
        message(
            3,
            4,
            Rpc::RequestVoteResponse(VoteResponse { granted: false }),
        ),
    );
    assert_eq!(net.engine(1).current_term(), term(4));
    assert_eq!(net.engine(1).leader(), None);
    // Vote requests in that term and the next are still refused.
    let same_term = net.step(1, message(3, 4, vote_request(last_index, last_term)));
    assert_eq!(vote_granted(&same_term), Some(false));
    let next_term = net.step(1, message(3, 5, vote_request(last_index, last_term)));
    assert_eq!(vote_granted(&next_term), None, "ignored outright");
    assert_eq!(net.engine(1).current_term(), term(4), "term not adopted");
    // Once a minimum election timeout passed without the leader, the vote is free again (node
    // 1 may have campaigned itself by then; the request names a term past its own).
    for _ in 0..net.engine(1).config().election_timeout_min_ticks {
        net.engines.get_mut(&id(1)).unwrap().step(Event::Tick);
    }
    let newer = net.engine(1).current_term().get() + 1;
    let later = net.step(1, message(3, newer, vote_request(last_index, last_term)));
    assert_eq!(vote_granted(&later), Some(true));
}

#[test]
fn engine_outside_its_founding_configuration_is_refused() {
    let result: Result<yggr_core::Engine<u64>, _> = yggr_core::Engine::with_config(
        id(9),
        Membership::from_voters([id(1), id(2), id(3)]),
        yggr_core::RandomEnv::seeded(9),
        EngineConfig::default(),
    );
    let error = result.expect_err("node 9 is not a founding member");
    assert!(matches!(
        error,
        yggr_core::ConfigError::NotAMember { id: node, .. } if node == id(9)
    ));
    assert!(error.to_string().contains("node 9"), "{error}");
}

#[test]
fn joining_node_with_empty_configuration_never_elects_itself() {
    let mut joiner: yggr_core::Engine<u64> = yggr_core::Engine::with_config(
        id(4),
        Membership::empty(),
        yggr_core::RandomEnv::seeded(4),
        EngineConfig::default(),
    )
    .unwrap();
    for _ in 0..500 {
        assert!(joiner.step(Event::Tick).is_empty());
    }
    assert_eq!(joiner.role(), Role::Follower);
    assert_eq!(joiner.current_term(), term(0));
}

#[test]
fn single_node_cluster_elects_itself() {
    let mut node = engine(1, &[1]);
    tick_until_role_changes(&mut node, 100);
    let mut guard = 0;
    while node.role() != Role::Leader && guard < 100 {
        node.step(Event::Tick);
        guard += 1;
    }
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.commit_index(), idx(1), "its no-op commits on its own");
}

#[test]
fn election_safety_at_most_one_leader_per_term_under_split_votes() {
    for seed in 0..20u64 {
        let mut net = Net::new(5);
        // Drive everyone with interleaved ticks: split votes happen; never two leaders a term.
        let mut leaders_by_term = std::collections::BTreeMap::new();
        for round in 0..300u64 {
            let node = 1 + (round * 7 + seed) % 5;
            net.step(node, Event::Tick);
            if round % 3 == 0 {
                net.deliver_all();
            }
            for (leader, leader_term) in net.leaders() {
                let previous = leaders_by_term.insert(leader_term, leader);
                assert!(
                    previous.is_none_or(|p: NodeId| p == leader),
                    "two leaders in {leader_term}"
                );
            }
        }
    }
}

/// Figure 2: a follower's election timer restarts only when it hears from the current leader
/// or grants a vote. Adopting a newer term from a candidate it refuses must not restart it,
/// or one candidate with a fast clock and a stale log keeps everyone else from campaigning.
#[test]
fn refusing_a_candidate_with_a_newer_term_does_not_restart_the_election_timer() {
    let mut node = engine_with(2, &[1, 2, 3], no_pre_vote());
    // Node 2 holds an entry the candidate lacks, so it refuses every request.
    node.step(message(3, 1, append((0, 0), vec![entry(1, 1, 7)], 0)));
    let mut ticks = 0;
    let mut candidate_term = 1;
    while node.role() == Role::Follower {
        candidate_term += 1;
        // Ignored while the leader counts as live, refused (term adopted) after that.
        let refused = node.step(message(1, candidate_term, vote_request(0, 0)));
        assert_ne!(vote_granted(&refused), Some(true));
        node.step(Event::Tick);
        ticks += 1;
        assert!(ticks < 20, "still a follower after {ticks} ticks");
    }
    assert_eq!(node.role(), Role::Candidate);
}

/// Found by an outside review. Rule: a vote granted in term T counts for the candidate in term T (the same class of bug
/// as the stale-term AppendEntries refusal fixed with `AppendOutcome::StaleTerm`). Candidate
/// 1's term-1 RequestVote to node 2 is delayed; node 1 campaigns again in term 2 and node 2
/// grants that vote. Then the delayed term-1 request reaches node 2, which refuses it with a
/// `RequestVoteResponse { granted: false }` stamped with its *current* term 2. Node 1 takes
/// that for node 2's answer in term 2 and overwrites the grant: with node 3's grant it holds
/// three of five votes (1, 2, 3) but counts two and does not become leader.
#[test]
fn a_grant_stands_against_a_refusal_of_an_older_request_in_the_same_term() {
    let config = EngineConfig {
        pre_vote: false,
        ..EngineConfig::default()
    };
    let voters = [1, 2, 3, 4, 5];
    let mut candidate = engine_with(1, &voters, config.clone());
    let mut voter = engine_with(2, &voters, config);

    let first = tick_until_role_changes(&mut candidate, 100);
    assert_eq!(candidate.role(), Role::Candidate);
    assert_eq!(candidate.current_term(), term(1));
    let delayed_request = sends(&first)
        .into_iter()
        .find(|(to, _)| *to == id(2))
        .map(|(_, message)| message)
        .expect("a term-1 vote request to node 2");

    // Split vote: node 1 times out again and campaigns in term 2.
    let mut second = Vec::new();
    for _ in 0..100 {
        second.extend(candidate.step(Event::Tick));
        if candidate.current_term() == term(2) {
            break;
        }
    }
    assert_eq!(candidate.current_term(), term(2));
    let current_request = sends(&second)
        .into_iter()
        .find(|(to, _)| *to == id(2))
        .map(|(_, message)| message)
        .expect("a term-2 vote request to node 2");

    let grant = sends(&voter.step(Event::Incoming(current_request)));
    assert_eq!(
        voter.voted_for(),
        Some(id(1)),
        "node 2 votes for node 1 in term 2"
    );
    let stale_refusal = sends(&voter.step(Event::Incoming(delayed_request)));
    assert_eq!(stale_refusal.len(), 1);
    assert_eq!(
        stale_refusal[0].1.term,
        term(2),
        "the refusal carries term 2"
    );
    assert_eq!(
        stale_refusal[0].1.rpc,
        Rpc::RequestVoteResponse(VoteResponse { granted: false })
    );

    candidate.step(Event::Incoming(grant[0].1.clone()));
    candidate.step(Event::Incoming(stale_refusal[0].1.clone()));
    candidate.step(message(
        3,
        2,
        Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(
        candidate.role(),
        Role::Leader,
        "nodes 1, 2 and 3 all voted for node 1 in term 2, a majority of five"
    );
}

/// Found by the simulator (liveness, without pre-vote): node 1 lags, knows an old
/// configuration without node 4, and so never sends node 4 its term. Each time its timer
/// fires first it takes the next term and votes for itself; node 4, whose log is ahead,
/// campaigns a moment later in that same term and is refused — for ever, when node 1's vote
/// is the one node 4 needs. A candidate refused only because our vote is spent, whose log is
/// ahead of ours, must restart our election timer so that it can go first next time.
#[test]
fn a_refused_candidate_whose_log_is_ahead_restarts_the_refusing_candidates_timer() {
    let config = EngineConfig {
        pre_vote: false,
        election_timeout_min_ticks: 10,
        election_timeout_max_ticks: 12,
        ..EngineConfig::default()
    };
    let mut node = engine_with(1, &[1, 2, 3], config);
    tick_until_role_changes(&mut node, 100);
    assert_eq!(node.role(), Role::Candidate);
    let campaign_term = node.current_term().get();
    for _ in 0..9 {
        node.step(Event::Tick);
    }
    let refused = node.step(message(4, campaign_term, vote_request(5, campaign_term)));
    assert_eq!(vote_granted(&refused), Some(false), "our vote is spent");
    for _ in 0..9 {
        node.step(Event::Tick);
        assert_eq!(
            node.current_term().get(),
            campaign_term,
            "campaigned again within a minimum timeout of refusing a candidate that is ahead"
        );
    }
    // A candidate that is not ahead of us changes nothing: our timer runs on.
    let mut node = engine_with(1, &[1, 2, 3], config_with_timeouts(10, 12));
    tick_until_role_changes(&mut node, 100);
    let campaign_term = node.current_term().get();
    for _ in 0..9 {
        node.step(Event::Tick);
    }
    node.step(message(4, campaign_term, vote_request(0, 0)));
    for _ in 0..3 {
        node.step(Event::Tick);
    }
    assert_eq!(node.current_term().get(), campaign_term + 1);
}

fn config_with_timeouts(min: u64, max: u64) -> EngineConfig {
    EngineConfig {
        pre_vote: false,
        election_timeout_min_ticks: min,
        election_timeout_max_ticks: max,
        ..EngineConfig::default()
    }
}
