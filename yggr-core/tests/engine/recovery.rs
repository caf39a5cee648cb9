//! Restart from durable state: what survives, and what corrupt state is refused.

use crate::common::*;
use bytes::Bytes;
use yggr_core::{
    EngineConfig, Event, Membership, RecoveredHardState, RecoveredSnapshot, RecoveryError, Role,
    Rpc, VoteRequest, VoteResponse,
};

fn state(
    current_term: u64,
    voted_for: Option<u64>,
    log: Vec<yggr_core::LogEntry<u64>>,
) -> RecoveredHardState<u64> {
    RecoveredHardState {
        current_term: term(current_term),
        voted_for: voted_for.map(id),
        snapshot: None,
        log,
    }
}

#[test]
fn recovered_engine_resumes_with_term_vote_and_log() {
    let mut node = engine(1, &[1, 2, 3]);
    node.recover_from(state(4, Some(2), vec![entry(1, 1, 10), entry(2, 3, 11)]))
        .unwrap();
    assert_eq!(node.current_term(), term(4));
    assert_eq!(node.voted_for(), Some(id(2)));
    assert_eq!(node.last_log_index(), idx(2));
    assert_eq!(node.last_log_term(), term(3));
    assert_eq!(
        node.commit_index(),
        idx(0),
        "commit is volatile and relearned"
    );
    assert_eq!(node.role(), Role::Follower);
}

#[test]
fn recovered_vote_is_not_granted_again_to_another_candidate_in_the_same_term() {
    let mut node = engine(1, &[1, 2, 3]);
    node.recover_from(state(4, Some(2), vec![])).unwrap();
    let actions = node.step(message(
        3,
        4,
        Rpc::RequestVote(VoteRequest {
            last_log_index: idx(0),
            last_log_term: term(0),
            leadership_transfer: false,
        }),
    ));
    let granted = sends(&actions).iter().any(|(_, m)| {
        matches!(
            m.rpc,
            Rpc::RequestVoteResponse(VoteResponse { granted: true })
        )
    });
    assert!(
        !granted,
        "a vote survives a crash: no second leader in term 4"
    );
}

#[test]
fn recovery_from_a_snapshot_sets_the_floor_and_membership() {
    let mut node = engine(1, &[1]);
    let membership = Membership::from_voters([id(1), id(2), id(3)]);
    node.recover_from(RecoveredHardState {
        current_term: term(5),
        voted_for: None,
        snapshot: Some(RecoveredSnapshot {
            last_included_index: idx(10),
            last_included_term: term(4),
            membership: membership.clone(),
            bytes: Bytes::from_static(b"state"),
        }),
        log: vec![entry(11, 5, 1)],
    })
    .unwrap();
    assert_eq!(node.snapshot_index(), idx(10));
    assert_eq!(node.commit_index(), idx(10));
    assert_eq!(node.last_applied(), idx(10));
    assert_eq!(node.last_log_index(), idx(11));
    assert_eq!(node.membership(), &membership);
}

#[test]
fn recovery_refuses_a_gap_in_the_log() {
    let mut node = engine(1, &[1]);
    let error = node
        .recover_from(state(3, None, vec![entry(1, 1, 0), entry(3, 1, 0)]))
        .unwrap_err();
    assert!(matches!(
        error,
        RecoveryError::NonContiguousLog { position: 1, .. }
    ));
    assert_eq!(node.last_log_index(), idx(0), "nothing changed");
}

#[test]
fn recovery_refuses_terms_that_go_backwards() {
    let mut node = engine(1, &[1]);
    let error = node
        .recover_from(state(3, None, vec![entry(1, 2, 0), entry(2, 1, 0)]))
        .unwrap_err();
    assert!(matches!(error, RecoveryError::TermRegression { .. }));
}

#[test]
fn recovery_refuses_entries_from_a_future_term() {
    let mut node = engine(1, &[1]);
    let error = node
        .recover_from(state(1, None, vec![entry(1, 2, 0)]))
        .unwrap_err();
    assert!(matches!(error, RecoveryError::TermFromTheFuture { .. }));
}

#[test]
fn recovery_is_refused_once_the_engine_has_run() {
    let mut node = engine(1, &[1, 2, 3]);
    node.step(Event::Tick);
    assert_eq!(
        node.recover_from(state(1, None, vec![])),
        Err(RecoveryError::AlreadyStarted)
    );
}

#[test]
fn recovered_single_node_re_commits_and_re_applies_its_log() {
    let mut node = engine(1, &[1]);
    node.recover_from(state(2, Some(1), vec![entry(1, 1, 10), entry(2, 2, 11)]))
        .unwrap();
    let mut applied_commands = Vec::new();
    for _ in 0..100 {
        applied_commands.extend(crate::common::applied_commands(&node.step(Event::Tick)));
        if node.role() == Role::Leader {
            break;
        }
    }
    assert_eq!(node.role(), Role::Leader);
    assert_eq!(node.current_term(), term(3));
    assert_eq!(applied_commands, vec![10, 11]);
}

#[test]
fn an_engine_reports_the_configuration_it_was_built_with() {
    let config = EngineConfig {
        election_timeout_min_ticks: 31,
        election_timeout_max_ticks: 47,
        heartbeat_interval_ticks: 5,
        max_entries_per_append: 9,
        pre_vote: false,
        ..EngineConfig::default()
    };
    let node = engine_with(1, &[1, 2, 3], config.clone());
    assert_eq!(node.config(), &config);
    assert_ne!(node.config(), &EngineConfig::default());
}

#[test]
fn an_engines_debug_output_names_its_id_role_and_term() {
    let node = engine(2, &[1, 2, 3]);
    let text = format!("{node:?}");
    assert!(text.starts_with("Engine"), "{text}");
    for field in [
        "id",
        "role: Follower",
        "current_term",
        "commit_index",
        "leader_id",
    ] {
        assert!(text.contains(field), "{field} missing from {text}");
    }
}
