//! Every counter in `EngineMetrics` equals an independent count of what the engine did: the
//! actions it emitted and the messages delivered to it, over a scenario that exercises
//! elections with pre-vote, refusals, replication with rejections, commits, snapshots, reads
//! that succeed and reads that fail, and a step-down for a higher term.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::*;
use bytes::Bytes;
use yggr_core::{
    Action, AppendOutcome, EngineConfig, EngineMetrics, Event, Message, NodeId, Rpc, VoteRequest,
};

/// What the test observed of each node, independently of its counters.
#[derive(Default)]
struct Observed {
    append_entries_received: u64,
    vote_requests_considered: u64,
    pre_vote_requests_considered: u64,
    higher_term_stepdowns: u64,
    reads_at_leader: u64,
}

#[derive(Default)]
struct Record {
    nodes: BTreeMap<NodeId, Observed>,
}

/// Delivers one message, noting what the engine should count for it: requests from its own
/// term or a newer one are considered, older ones are refused without counting, and a newer
/// term in anything but a granted pre-vote is adopted.
fn deliver_message(net: &mut Net, record: &mut Record, to: NodeId, message: Message<u64>) {
    let before = net.engine(to.get()).current_term();
    let current_or_newer = message.term >= before;
    let seen = record.nodes.entry(to).or_default();
    match &message.rpc {
        Rpc::AppendEntries(_) if current_or_newer => seen.append_entries_received += 1,
        Rpc::RequestVote(_) if current_or_newer => seen.vote_requests_considered += 1,
        Rpc::RequestPreVote(_) if current_or_newer => seen.pre_vote_requests_considered += 1,
        _ => {}
    }
    let granted_pre_vote =
        matches!(&message.rpc, Rpc::RequestPreVoteResponse(response) if response.granted);
    let term = message.term;
    net.step(to.get(), Event::Incoming(message));
    let after = net.engine(to.get()).current_term();
    if term > before && after == term && !granted_pre_vote {
        record.nodes.entry(to).or_default().higher_term_stepdowns += 1;
    }
}

fn deliver(net: &mut Net, record: &mut Record) {
    while let Some((to, message)) = net.in_flight.pop_front() {
        if net.cut.contains(&(message.from, to)) || !net.engines.contains_key(&to) {
            continue;
        }
        deliver_message(net, record, to, message);
    }
}

/// `count` heartbeat intervals of node 1, each followed by delivery to quiet.
fn heartbeats(net: &mut Net, record: &mut Record, count: u64) {
    for _ in 0..count {
        for _ in 0..net.engine(1).config().heartbeat_interval_ticks {
            net.step(1, Event::Tick);
        }
        deliver(net, record);
    }
}

fn propose_read(net: &mut Net, record: &mut Record, node: u64, id: u64) {
    if net.engine(node).role() == yggr_core::Role::Leader {
        record
            .nodes
            .entry(crate::common::id(node))
            .or_default()
            .reads_at_leader += 1;
    }
    net.step(node, Event::ProposeRead { id });
}

/// The counters recomputed from the record, for `node`.
fn expected(net: &Net, record: &Record, node: NodeId) -> EngineMetrics {
    let actions: &[Action<u64>] = net.actions.get(&node).map_or(&[], Vec::as_slice);
    let sent: Vec<&Message<u64>> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Send { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    let default = Observed::default();
    let seen = record.nodes.get(&node).unwrap_or(&default);
    let count_sent = |matches: &dyn Fn(&Rpc<u64>) -> bool| {
        sent.iter().filter(|message| matches(&message.rpc)).count() as u64
    };
    let terms_of = |matches: &dyn Fn(&Rpc<u64>) -> bool| -> BTreeSet<u64> {
        sent.iter()
            .filter(|message| matches(&message.rpc))
            .map(|message| message.term.get())
            .collect()
    };
    let mut metrics = EngineMetrics::default();
    metrics.elections_started = terms_of(&|rpc| matches!(rpc, Rpc::RequestVote(_))).len() as u64;
    metrics.pre_votes_granted =
        count_sent(&|rpc| matches!(rpc, Rpc::RequestPreVoteResponse(v) if v.granted));
    metrics.pre_votes_denied = seen.pre_vote_requests_considered - metrics.pre_votes_granted;
    metrics.votes_granted =
        count_sent(&|rpc| matches!(rpc, Rpc::RequestVoteResponse(v) if v.granted));
    // Every vote request considered is granted or denied (denied outright, without an
    // answer, while a leader is live).
    metrics.votes_denied = seen.vote_requests_considered - metrics.votes_granted;
    metrics.higher_term_stepdowns = seen.higher_term_stepdowns;
    metrics.read_index_started = seen.reads_at_leader;
    metrics.leader_elections_won =
        terms_of(&|rpc| matches!(rpc, Rpc::AppendEntries(_))).len() as u64;
    metrics.append_entries_sent = count_sent(&|rpc| matches!(rpc, Rpc::AppendEntries(_)));
    metrics.append_entries_received = seen.append_entries_received;
    metrics.append_entries_rejected = count_sent(&|rpc| {
        matches!(
            rpc,
            Rpc::AppendEntriesResponse(response)
                if matches!(response.outcome, AppendOutcome::Rejected { .. })
        )
    });
    metrics.entries_appended = actions
        .iter()
        .map(|action| match action {
            Action::PersistLogEntries(entries) => entries.len() as u64,
            _ => 0,
        })
        .sum();
    metrics.entries_applied = actions
        .iter()
        .map(|action| match action {
            Action::Apply(entries) => entries.len() as u64,
            _ => 0,
        })
        .sum();
    metrics.snapshots_sent = count_sent(&|rpc| matches!(rpc, Rpc::InstallSnapshot(_)));
    metrics.snapshots_installed = actions
        .iter()
        .filter(|action| matches!(action, Action::ApplySnapshot { .. }))
        .count() as u64;
    metrics.reads_completed = actions
        .iter()
        .filter(|action| matches!(action, Action::ReadReady { .. }))
        .count() as u64;
    metrics.reads_failed = actions
        .iter()
        .filter(|action| matches!(action, Action::ReadFailed { .. }))
        .count() as u64;
    metrics
}

#[test]
fn every_counter_equals_an_independent_count_of_what_the_engine_did() {
    let config = EngineConfig {
        snapshot_chunk_size_bytes: 4,
        ..EngineConfig::default()
    };
    let mut net = Net::with_config(3, config);
    let mut record = Record::default();

    // Node 3 is cut off: it campaigns alone, and its pre-votes go unanswered.
    net.isolate(3);
    for _ in 0..40 {
        net.step(3, Event::Tick);
    }
    net.in_flight.clear();
    // Node 1 wins with pre-vote and vote from node 2.
    for _ in 0..100 {
        net.step(1, Event::Tick);
        if net.engine(1).role() != yggr_core::Role::Follower {
            break;
        }
    }
    deliver(&mut net, &mut record);
    assert_eq!(net.engine(1).role(), yggr_core::Role::Leader);
    for command in 0..6 {
        net.step(1, Event::ClientProposal(command));
    }
    deliver(&mut net, &mut record);
    propose_read(&mut net, &mut record, 1, 1);
    propose_read(&mut net, &mut record, 2, 2);
    deliver(&mut net, &mut record);
    // Node 2 hears from its leader, so it denies a pre-vote.
    let probe = net.engine(2).current_term().get() + 1;
    deliver_message(
        &mut net,
        &mut record,
        crate::common::id(2),
        Message {
            from: crate::common::id(3),
            term: term(probe),
            rpc: Rpc::RequestPreVote(yggr_core::VoteRequest {
                last_log_index: idx(100),
                last_log_term: term(probe),
                leadership_transfer: false,
            }),
        },
    );
    net.in_flight.clear();
    // Node 3 rejoins and catches up; then it misses appends while cut off, so the next
    // pipelined append is rejected and the leader backs off.
    net.heal();
    heartbeats(&mut net, &mut record, 2);
    net.isolate(3);
    for command in 100..104 {
        net.step(1, Event::ClientProposal(command));
    }
    deliver(&mut net, &mut record);
    net.heal();
    net.step(1, Event::ClientProposal(104));
    deliver(&mut net, &mut record);
    heartbeats(&mut net, &mut record, 2);
    assert_eq!(
        net.engine(3).last_log_index(),
        net.engine(1).last_log_index()
    );
    // Cut off again while the leader moves on and compacts, it gets the snapshot in chunks.
    net.isolate(3);
    for command in 6..12 {
        net.step(1, Event::ClientProposal(command));
    }
    deliver(&mut net, &mut record);
    let applied = net.engine(1).last_applied();
    net.step(
        1,
        Event::SnapshotTaken {
            last_included_index: applied,
            bytes: Bytes::from_static(b"0123456789"),
        },
    );
    net.heal();
    heartbeats(&mut net, &mut record, 3);
    // A pending read fails when node 1 steps down for a higher term.
    net.isolate(1);
    propose_read(&mut net, &mut record, 1, 3);
    net.in_flight.clear();
    let newer = net.engine(1).current_term().get() + 5;
    net.heal();
    deliver_message(
        &mut net,
        &mut record,
        crate::common::id(1),
        Message {
            from: crate::common::id(2),
            term: term(newer),
            rpc: Rpc::RequestVoteResponse(yggr_core::VoteResponse { granted: false }),
        },
    );
    deliver(&mut net, &mut record);
    // The cluster elects a leader again.
    for _ in 0..200 {
        net.tick_all();
        deliver(&mut net, &mut record);
        if !net.leaders().is_empty() {
            break;
        }
    }
    assert_eq!(net.leaders().len(), 1);

    let mut exercised = EngineMetrics::default();
    for node in [1, 2, 3] {
        let id = crate::common::id(node);
        let engine = net.engine(node);
        let mut want = expected(&net, &record, id);
        let got = engine.metrics();
        // Every node started empty and never restarted: all it holds as committed became
        // committed here, by AppendEntries or by installing a snapshot.
        want.entries_committed = engine.commit_index().get();
        // Gauges.
        want.current_term = engine.current_term();
        want.commit_index = engine.commit_index();
        want.last_applied = engine.last_applied();
        want.log_len = engine.last_log_index().get() - engine.snapshot_index().get();
        want.role_code = engine.role().code();
        assert_eq!(got, want, "node {node}");
        exercised.elections_started += got.elections_started;
        exercised.pre_votes_granted += got.pre_votes_granted;
        exercised.append_entries_rejected += got.append_entries_rejected;
        exercised.snapshots_sent += got.snapshots_sent;
        exercised.snapshots_installed += got.snapshots_installed;
        exercised.reads_completed += got.reads_completed;
        exercised.reads_failed += got.reads_failed;
        exercised.higher_term_stepdowns += got.higher_term_stepdowns;
    }
    // The scenario exercised every counter at least once.
    assert!(exercised.elections_started >= 2, "{exercised:?}");
    assert!(exercised.pre_votes_granted >= 1);
    assert!(net.engine(2).metrics().pre_votes_denied >= 1);
    assert!(exercised.append_entries_rejected >= 1);
    assert!(
        exercised.snapshots_sent >= 3,
        "ten bytes in four-byte chunks"
    );
    assert_eq!(exercised.snapshots_installed, 1);
    assert_eq!(exercised.reads_completed, 1);
    assert_eq!(
        exercised.reads_failed, 2,
        "one on a follower, one on step-down"
    );
    // Node 3 stepped down to the new term at least once; node 1 did when told of term +5.
    assert!(net.engine(1).metrics().higher_term_stepdowns >= 1);
    assert!(exercised.higher_term_stepdowns >= 2);
}

#[test]
fn a_vote_request_ignored_while_a_leader_is_live_counts_as_denied() {
    let config = EngineConfig {
        lease_duration_ticks: 5,
        ..EngineConfig::default()
    };
    let mut node = engine_with(2, &[1, 2, 3], config);
    node.step(message(1, 1, append((0, 0), vec![], 0)));
    assert_eq!(node.leader(), Some(id(1)));
    let actions = node.step(message(
        3,
        2,
        Rpc::RequestVote(VoteRequest {
            last_log_index: idx(5),
            last_log_term: term(1),
            leadership_transfer: false,
        }),
    ));
    assert!(sends(&actions).is_empty(), "ignored, not answered");
    assert_eq!(node.current_term(), term(1));
    assert_eq!(node.metrics().votes_denied, 1);
    assert_eq!(node.metrics().votes_granted, 0);
}

#[test]
fn each_vote_refused_to_a_candidate_with_a_stale_log_counts_as_denied() {
    let mut node = engine_with(2, &[1, 2, 3], EngineConfig::default());
    // Node 2 holds an entry of term 1; candidates with empty logs are behind it.
    node.step(message(1, 1, append((0, 0), vec![entry(1, 1, 7)], 0)));
    for (candidate, candidate_term) in [(3, 5), (1, 6)] {
        let actions = node.step(message(
            candidate,
            candidate_term,
            Rpc::RequestVote(VoteRequest {
                last_log_index: idx(0),
                last_log_term: term(0),
                leadership_transfer: true,
            }),
        ));
        assert!(!sends(&actions).is_empty(), "a refusal is answered");
    }
    assert_eq!(node.metrics().votes_denied, 2);
    assert_eq!(node.metrics().votes_granted, 0);
}
