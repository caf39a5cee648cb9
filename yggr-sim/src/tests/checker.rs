//! Every checker fires on a deliberately broken history, and stays quiet on a sound one.

use bytes::Bytes;
use yggr_core::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, EntryPayload, LogEntry, LogIndex, Message,
    NodeId, Rpc, Term, VoteRequest, VoteResponse,
};

use crate::checker::{Invariant, LogView, SafetyChecker};
use crate::disk::{DurableState, PendingWrite};
use crate::harness::Command;

fn id(raw: u64) -> NodeId {
    NodeId::new(raw).unwrap()
}

fn entry(index: u64, term: u64, command: u64) -> LogEntry<Command> {
    LogEntry {
        term: Term::new(term),
        index: LogIndex::new(index),
        payload: EntryPayload::Command(command),
    }
}

fn fired(result: Result<(), crate::checker::Violation>) -> Invariant {
    result.expect_err("the checker must fire").invariant
}

struct Log(Vec<u64>);

impl LogView for Log {
    fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == LogIndex::ZERO {
            return Some(Term::ZERO);
        }
        self.0.get(index.get() as usize - 1).copied().map(Term::new)
    }
    fn snapshot_index(&self) -> LogIndex {
        LogIndex::ZERO
    }
    fn last_index(&self) -> LogIndex {
        LogIndex::new(self.0.len() as u64)
    }
}

#[test]
fn election_safety_fires_on_two_leaders_in_one_term() {
    let mut checker = SafetyChecker::new();
    checker.observe_leader(id(1), Term::new(3)).unwrap();
    checker.observe_leader(id(1), Term::new(3)).unwrap();
    checker.observe_leader(id(2), Term::new(4)).unwrap();
    assert_eq!(
        fired(checker.observe_leader(id(2), Term::new(3))),
        Invariant::ElectionSafety
    );
}

#[test]
fn one_vote_per_term_fires_on_a_second_candidate_in_the_same_term() {
    let mut checker = SafetyChecker::new();
    checker.observe_vote(id(3), id(1), Term::new(5)).unwrap();
    // The same grant again (a retransmitted answer), and other voters or terms, are fine.
    checker.observe_vote(id(3), id(1), Term::new(5)).unwrap();
    checker.observe_vote(id(2), id(4), Term::new(5)).unwrap();
    checker.observe_vote(id(3), id(2), Term::new(6)).unwrap();
    assert_eq!(
        fired(checker.observe_vote(id(3), id(2), Term::new(5))),
        Invariant::OneVotePerTerm
    );
}

#[test]
fn log_matching_fires_on_different_entries_with_the_same_index_and_term() {
    let mut checker = SafetyChecker::new();
    checker
        .observe_stored(id(1), &entry(5, 2, 10), Term::new(1))
        .unwrap();
    checker
        .observe_stored(id(2), &entry(5, 2, 10), Term::new(1))
        .unwrap();
    assert_eq!(
        fired(checker.observe_stored(id(3), &entry(5, 2, 11), Term::new(1))),
        Invariant::LogMatching
    );
}

#[test]
fn log_matching_fires_on_the_same_entry_after_a_different_prefix() {
    let mut checker = SafetyChecker::new();
    checker
        .observe_stored(id(1), &entry(5, 2, 10), Term::new(1))
        .unwrap();
    assert_eq!(
        fired(checker.observe_stored(id(2), &entry(5, 2, 10), Term::new(2))),
        Invariant::LogMatching
    );
}

#[test]
fn leader_completeness_fires_when_a_new_leader_lacks_a_committed_entry() {
    let mut checker = SafetyChecker::new();
    checker
        .observe_committed(id(1), LogIndex::new(1), Term::new(1), Term::new(1))
        .unwrap();
    checker
        .observe_committed(id(1), LogIndex::new(2), Term::new(1), Term::new(1))
        .unwrap();
    checker
        .check_leader_complete(id(2), Term::new(2), &Log(vec![1, 1, 2]))
        .unwrap();
    assert_eq!(
        fired(checker.check_leader_complete(id(3), Term::new(3), &Log(vec![1]))),
        Invariant::LeaderCompleteness
    );
    assert_eq!(
        fired(checker.check_leader_complete(id(3), Term::new(3), &Log(vec![1, 2]))),
        Invariant::LeaderCompleteness
    );
}

#[test]
fn state_machine_safety_fires_on_different_commands_at_one_index() {
    let mut checker = SafetyChecker::new();
    checker
        .observe_applied(id(1), LogIndex::new(4), Some(7), 99)
        .unwrap();
    checker
        .observe_applied(id(2), LogIndex::new(4), Some(7), 99)
        .unwrap();
    assert_eq!(
        fired(checker.observe_applied(id(3), LogIndex::new(4), Some(8), 99)),
        Invariant::StateMachineSafety
    );
    assert_eq!(
        fired(checker.observe_applied(id(3), LogIndex::new(4), Some(7), 100)),
        Invariant::StateMachineSafety
    );
    assert_eq!(
        fired(checker.observe_restored(id(3), LogIndex::new(4), 5)),
        Invariant::StateMachineSafety
    );
}

#[test]
fn leader_completeness_spares_a_late_leader_of_a_term_older_than_the_commit() {
    let mut checker = SafetyChecker::new();
    // Entry 4 of term 2 was committed while the cluster was in term 5.
    checker
        .observe_committed(id(6), LogIndex::new(4), Term::new(2), Term::new(5))
        .unwrap();
    // A leader of term 3, elected late on delayed votes, need not hold it...
    checker
        .check_leader_complete(id(7), Term::new(3), &Log(vec![1, 1, 1, 1]))
        .unwrap();
    // ...but a leader of term 6 must.
    assert_eq!(
        fired(checker.check_leader_complete(id(7), Term::new(6), &Log(vec![1, 1, 1, 1]))),
        Invariant::LeaderCompleteness
    );
}

#[test]
fn state_machine_safety_fires_on_two_terms_committed_at_one_index() {
    let mut checker = SafetyChecker::new();
    checker
        .observe_committed(id(1), LogIndex::new(2), Term::new(1), Term::new(1))
        .unwrap();
    assert_eq!(
        fired(checker.observe_committed(id(2), LogIndex::new(2), Term::new(2), Term::new(2))),
        Invariant::StateMachineSafety
    );
}

fn message(term: u64, rpc: Rpc<Command>) -> Message<Command> {
    Message {
        from: id(1),
        term: Term::new(term),
        rpc,
    }
}

#[test]
fn persist_before_send_fires_on_a_term_not_yet_on_disk() {
    let disk = DurableState {
        current_term: Term::new(1),
        ..DurableState::default()
    };
    let heartbeat = Rpc::AppendEntries(AppendEntries {
        prev_log_index: LogIndex::ZERO,
        prev_log_term: Term::ZERO,
        entries: vec![],
        leader_commit: LogIndex::ZERO,
        round: 0,
    });
    SafetyChecker::check_send_ordering(&disk, id(2), &message(1, heartbeat.clone())).unwrap();
    assert_eq!(
        fired(SafetyChecker::check_send_ordering(
            &disk,
            id(2),
            &message(2, heartbeat)
        )),
        Invariant::PersistBeforeSend
    );
}

#[test]
fn persist_before_send_fires_on_votes_and_entries_not_yet_on_disk() {
    let mut disk = DurableState {
        current_term: Term::new(2),
        ..DurableState::default()
    };
    let request = Rpc::RequestVote(VoteRequest {
        last_log_index: LogIndex::ZERO,
        last_log_term: Term::ZERO,
        leadership_transfer: false,
    });
    assert_eq!(
        fired(SafetyChecker::check_send_ordering(
            &disk,
            id(2),
            &message(2, request.clone())
        )),
        Invariant::PersistBeforeSend
    );
    let grant = Rpc::RequestVoteResponse(VoteResponse { granted: true });
    assert_eq!(
        fired(SafetyChecker::check_send_ordering(
            &disk,
            id(2),
            &message(2, grant.clone())
        )),
        Invariant::PersistBeforeSend
    );
    let append = Rpc::AppendEntries(AppendEntries {
        prev_log_index: LogIndex::ZERO,
        prev_log_term: Term::ZERO,
        entries: vec![entry(1, 2, 5)],
        leader_commit: LogIndex::ZERO,
        round: 0,
    });
    assert_eq!(
        fired(SafetyChecker::check_send_ordering(
            &disk,
            id(2),
            &message(2, append.clone())
        )),
        Invariant::PersistBeforeSend
    );
    let ack = Rpc::AppendEntriesResponse(AppendEntriesResponse {
        round: 0,
        outcome: AppendOutcome::Accepted {
            match_index: LogIndex::new(1),
        },
    });
    assert_eq!(
        fired(SafetyChecker::check_send_ordering(
            &disk,
            id(2),
            &message(2, ack.clone())
        )),
        Invariant::PersistBeforeSend
    );
    // A vote persisted for someone else does not cover a grant to node 2.
    disk.voted_for = Some(id(3));
    assert_eq!(
        fired(SafetyChecker::check_send_ordering(
            &disk,
            id(2),
            &message(2, grant.clone())
        )),
        Invariant::PersistBeforeSend
    );
    // Once durable, the same messages are fine: node 1 voted for itself as a candidate, and
    // a grant is checked against a vote for its recipient.
    disk.voted_for = Some(id(1));
    SafetyChecker::check_send_ordering(&disk, id(1), &message(2, grant.clone())).unwrap();
    disk.apply(PendingWrite::Entries(vec![entry(1, 2, 5)]));
    for rpc in [request, append, ack] {
        SafetyChecker::check_send_ordering(&disk, id(2), &message(2, rpc)).unwrap();
    }
}

#[test]
fn single_in_flight_config_change_fires_on_two_uncommitted_changes() {
    let tail = |flags: &[(u64, bool)]| {
        flags
            .iter()
            .map(|(index, config)| (LogIndex::new(*index), *config))
            .collect::<Vec<_>>()
    };
    SafetyChecker::check_single_config_change(
        id(1),
        tail(&[(3, true), (4, false), (5, true)]).into_iter(),
        LogIndex::new(3),
    )
    .unwrap();
    assert_eq!(
        fired(SafetyChecker::check_single_config_change(
            id(1),
            tail(&[(4, true), (5, false), (6, true)]).into_iter(),
            LogIndex::new(3),
        )),
        Invariant::SingleInFlightConfigChange
    );
}

#[test]
fn snapshot_within_commit_fires_on_a_snapshot_past_the_commit_index() {
    SafetyChecker::check_snapshot_within_commit(id(1), LogIndex::new(5), LogIndex::new(5)).unwrap();
    assert_eq!(
        fired(SafetyChecker::check_snapshot_within_commit(
            id(1),
            LogIndex::new(6),
            LogIndex::new(5)
        )),
        Invariant::SnapshotWithinCommit
    );
    let _ = Bytes::new();
}

#[test]
fn applied_monotonic_fires_on_a_snapshot_that_would_roll_the_state_machine_back() {
    SafetyChecker::check_applied_moves_forward(id(1), LogIndex::new(5), LogIndex::new(6)).unwrap();
    assert_eq!(
        fired(SafetyChecker::check_applied_moves_forward(
            id(1),
            LogIndex::new(5),
            LogIndex::new(5)
        )),
        Invariant::AppliedMonotonic
    );
    assert_eq!(
        fired(SafetyChecker::check_applied_moves_forward(
            id(1),
            LogIndex::new(5),
            LogIndex::new(3)
        )),
        Invariant::AppliedMonotonic
    );
}

#[test]
fn write_durability_fires_when_an_acknowledged_write_is_not_what_was_applied() {
    let mut checker = SafetyChecker::new();
    checker
        .observe_applied(id(1), LogIndex::new(3), Some(30), 7)
        .unwrap();
    checker
        .check_acknowledged_write(30, LogIndex::new(3))
        .unwrap();
    assert_eq!(
        fired(checker.check_acknowledged_write(31, LogIndex::new(3))),
        Invariant::WriteDurability
    );
    assert_eq!(
        fired(checker.check_acknowledged_write(40, LogIndex::new(4))),
        Invariant::WriteDurability,
        "acknowledged but never applied anywhere"
    );
}

/// A healthy three-node run, and a history in which some client is never answered.
fn run_with_an_unanswerable_request(
    orphan: impl FnOnce(&mut crate::Cluster),
) -> Result<crate::liveness::LivenessReport, crate::SimError> {
    let options = crate::RunOptions::new(3, 3, 2_000, crate::Policy::Happy);
    let mut cluster = crate::runner::build(&options);
    let mut schedule = crate::Schedule::new(&options, &mut cluster);
    while cluster.step_count < options.steps {
        schedule.step(&mut cluster).unwrap();
    }
    orphan(&mut cluster);
    crate::liveness::heal_and_check(&mut cluster, &mut schedule)
}

#[test]
fn liveness_passes_a_healthy_cluster_and_fires_on_an_unanswered_write_or_read() {
    run_with_an_unanswerable_request(|_| {}).unwrap();
    let failure = run_with_an_unanswerable_request(|cluster| {
        // A write a follower claims to have appended, far past any log: nothing answers it.
        let follower = cluster
            .ids()
            .into_iter()
            .find(|node| Some(*node) != cluster.leader())
            .unwrap();
        cluster.history.proposed(
            follower,
            u64::MAX,
            &[],
            Some((LogIndex::new(1_000_000), Term::new(1))),
        );
    })
    .unwrap_err();
    assert_eq!(failure.violation.invariant, Invariant::Liveness);
    assert!(failure.violation.detail.contains("unanswered"), "{failure}");
    let failure = run_with_an_unanswerable_request(|cluster| {
        cluster.history.read_sent(
            id(1),
            u64::MAX,
            crate::history::PendingRead {
                required: LogIndex::ZERO,
                sent_at_step: 0,
            },
        );
    })
    .unwrap_err();
    assert_eq!(failure.violation.invariant, Invariant::Liveness);
}

#[test]
fn recoverable_disk_fires_on_an_entry_stored_before_its_term() {
    let mut disk = DurableState::default();
    disk.apply(PendingWrite::HardState {
        current_term: Term::new(2),
        voted_for: None,
    });
    disk.apply(PendingWrite::Entries(vec![entry(1, 2, 5)]));
    SafetyChecker::check_recoverable(id(1), &disk).unwrap();
    disk.apply(PendingWrite::Entries(vec![entry(2, 3, 6)]));
    assert_eq!(
        fired(SafetyChecker::check_recoverable(id(1), &disk)),
        Invariant::RecoverableDisk
    );
}

/// Found by an outside review: snapshot acknowledgements were not checked at all.
#[test]
fn persist_before_send_fires_on_a_snapshot_acknowledged_before_it_is_durable() {
    let answer = |index: u64| Message {
        from: id(2),
        term: Term::new(2),
        rpc: Rpc::InstallSnapshotResponse(yggr_core::InstallSnapshotResponse {
            last_included_index: LogIndex::new(index),
            next_offset: 16,
            done: true,
            round: 3,
        }),
    };
    let mut disk = DurableState {
        current_term: Term::new(2),
        ..DurableState::default()
    };
    assert_eq!(
        fired(SafetyChecker::check_send_ordering(
            &disk,
            id(1),
            &answer(40)
        )),
        Invariant::PersistBeforeSend
    );
    disk.apply(PendingWrite::Snapshot(crate::disk::StoredSnapshot {
        last_included_index: LogIndex::new(40),
        last_included_term: Term::new(2),
        membership: yggr_core::Membership::default(),
        bytes: Bytes::new(),
    }));
    SafetyChecker::check_send_ordering(&disk, id(1), &answer(40)).unwrap();
}

#[test]
fn lease_exclusivity_fires_on_a_lease_read_while_a_newer_leader_exists() {
    let mut checker = SafetyChecker::new();
    checker.observe_leader(id(1), Term::new(3)).unwrap();
    checker.check_lease_read(id(1), Term::new(3)).unwrap();
    checker.observe_leader(id(2), Term::new(4)).unwrap();
    assert_eq!(
        fired(checker.check_lease_read(id(1), Term::new(3))),
        Invariant::LeaseExclusivity
    );
    checker.check_lease_read(id(2), Term::new(4)).unwrap();
}

#[test]
fn match_index_fires_when_a_leader_counts_entries_a_follower_does_not_hold() {
    let mut disk = DurableState::default();
    disk.apply(PendingWrite::Entries(vec![entry(1, 1, 1), entry(2, 2, 2)]));
    let check = |match_index: u64, leader_term: Option<u64>, disk: &DurableState| {
        SafetyChecker::check_match_index(
            id(1),
            id(2),
            LogIndex::new(match_index),
            leader_term.map(Term::new),
            disk,
        )
    };
    check(2, Some(2), &disk).unwrap();
    check(1, Some(1), &disk).unwrap();
    check(0, Some(0), &disk).unwrap();
    assert_eq!(fired(check(3, Some(2), &disk)), Invariant::MatchIndex);
    assert_eq!(fired(check(2, Some(3), &disk)), Invariant::MatchIndex);
}

/// A three-voter reign of leader 1 in term 2: rounds up to 3 sent, voters 2 and 3 acknowledged
/// round 3, and read 7 arrived after round 3 and before any later round.
fn reign_with_a_lease_read() -> (SafetyChecker, std::collections::BTreeSet<NodeId>) {
    let mut checker = SafetyChecker::new();
    let term = Term::new(2);
    checker.observe_round_sent(id(1), term, 3);
    checker.observe_round_acknowledged(id(1), term, id(2), 3);
    checker.observe_round_acknowledged(id(1), term, id(3), 2);
    checker.observe_round_acknowledged(id(1), term, id(3), 3);
    checker.observe_read_proposed(id(1), term, 7);
    (checker, [id(1), id(2), id(3)].into_iter().collect())
}

#[test]
fn a_lease_read_while_a_voter_would_grant_a_vote_fails_the_check() {
    let term = Term::new(2);
    // Every voter whose acknowledgement counts still refuses votes: a sound lease read.
    let (mut checker, voters) = reign_with_a_lease_read();
    assert_eq!(
        checker.check_lease_read_refusals(id(1), term, 7, &voters, |_| Some(true)),
        Ok(true)
    );
    // Voter 3 acknowledged the round the lease rests on, and would now grant a vote (its
    // refusal ran out, or it restarted and forgot it): the lease vouches for nothing.
    let (mut checker, voters) = reign_with_a_lease_read();
    let outcome =
        checker.check_lease_read_refusals(id(1), term, 7, &voters, |voter| Some(voter != id(3)));
    assert_eq!(fired(outcome.map(|_| ())), Invariant::LeaseRefusals);
    // A voter that is down votes for no one.
    let (mut checker, voters) = reign_with_a_lease_read();
    assert_eq!(
        checker.check_lease_read_refusals(id(1), term, 7, &voters, |voter| {
            (voter != id(3)).then_some(true)
        }),
        Ok(true)
    );
}

#[test]
fn a_read_confirmed_by_a_later_round_or_by_no_one_is_judged_by_what_confirmed_it() {
    let term = Term::new(2);
    // A majority acknowledged round 4, sent after the read arrived: the round confirmed it,
    // whatever the voters' clocks say now.
    let (mut checker, voters) = reign_with_a_lease_read();
    checker.observe_round_sent(id(1), term, 4);
    checker.observe_round_acknowledged(id(1), term, id(2), 4);
    assert_eq!(
        checker.check_lease_read_refusals(id(1), term, 7, &voters, |_| Some(false)),
        Ok(false)
    );
    // Only voter 2 ever acknowledged anything in this reign; with the leader that is a
    // majority of three, but not of five.
    let mut checker = SafetyChecker::new();
    checker.observe_round_sent(id(1), term, 1);
    checker.observe_round_acknowledged(id(1), term, id(2), 1);
    checker.observe_read_proposed(id(1), term, 9);
    let five = [id(1), id(2), id(3), id(4), id(5)].into_iter().collect();
    let outcome = checker.check_lease_read_refusals(id(1), term, 9, &five, |_| Some(true));
    assert_eq!(fired(outcome.map(|_| ())), Invariant::LeaseRefusals);
    // A read of another reign (or never recorded as ready) is not judged.
    let (mut checker, voters) = reign_with_a_lease_read();
    assert_eq!(
        checker.check_lease_read_refusals(id(1), Term::new(3), 7, &voters, |_| Some(false)),
        Ok(false)
    );
}

#[test]
fn committed_configuration_fires_when_two_nodes_disagree_on_the_membership_at_an_index() {
    use yggr_core::Membership;
    let mut checker = SafetyChecker::new();
    let three = checker.configuration_id(&Membership::from_voters([id(1), id(2), id(3)]));
    let two = checker.configuration_id(&Membership::from_voters([id(1), id(2)]));
    assert_eq!(
        checker.configuration_id(&Membership::from_voters([id(3), id(2), id(1)])),
        three,
        "the same configuration gets the same number"
    );
    checker
        .observe_committed_configuration(id(1), LogIndex::new(4), three)
        .unwrap();
    checker
        .observe_committed_configuration(id(1), LogIndex::new(5), two)
        .unwrap();
    checker
        .observe_committed_configuration(id(2), LogIndex::new(4), three)
        .unwrap();
    // Node 3 installed a snapshot through index 5 that carried the configuration before the
    // change at index 5.
    assert_eq!(
        fired(checker.observe_committed_configuration(id(3), LogIndex::new(5), three)),
        Invariant::CommittedConfiguration
    );
}
