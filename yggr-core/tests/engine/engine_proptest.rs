//! Random event sequences against one engine: `step` never panics, and the local invariants
//! hold after every event (term never decreases; commit never decreases nor passes the log;
//! the vote changes only together with the term, or from none to some).

use crate::common::*;
use bytes::Bytes;
use proptest::prelude::*;
use yggr_core::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, ConfigChange, EngineConfig, EntryPayload,
    Event, InstallSnapshot, InstallSnapshotResponse, LogEntry, Membership, Message, Rpc,
    VoteRequest, VoteResponse,
};

fn node() -> impl Strategy<Value = u64> {
    1u64..=5
}

fn small() -> impl Strategy<Value = u64> {
    0u64..12
}

fn entries() -> impl Strategy<Value = Vec<LogEntry<u64>>> {
    (
        small(),
        proptest::collection::vec((0u64..4, any::<u64>()), 0..5),
    )
        .prop_map(|(start, specs)| {
            specs
                .into_iter()
                .enumerate()
                .map(|(offset, (entry_term, command))| LogEntry {
                    term: term(entry_term),
                    index: idx(start + offset as u64 + 1),
                    payload: EntryPayload::Command(command),
                })
                .collect()
        })
}

fn rpc() -> impl Strategy<Value = Rpc<u64>> {
    let vote = (0u64..12, 0u64..6, any::<bool>()).prop_map(|(i, t, transfer)| VoteRequest {
        last_log_index: idx(i),
        last_log_term: term(t),
        leadership_transfer: transfer,
    });
    prop_oneof![
        vote.clone().prop_map(Rpc::RequestVote),
        vote.prop_map(Rpc::RequestPreVote),
        any::<bool>().prop_map(|granted| Rpc::RequestVoteResponse(VoteResponse { granted })),
        any::<bool>().prop_map(|granted| Rpc::RequestPreVoteResponse(VoteResponse { granted })),
        (small(), 0u64..6, entries(), small(), 0u64..5).prop_map(|(p, pt, e, c, r)| {
            Rpc::AppendEntries(AppendEntries {
                prev_log_index: idx(p),
                prev_log_term: term(pt),
                entries: e,
                leader_commit: idx(c),
                round: r,
            })
        }),
        (small(), 0u64..5).prop_map(|(m, r)| Rpc::AppendEntriesResponse(AppendEntriesResponse {
            round: r,
            outcome: AppendOutcome::Accepted {
                match_index: idx(m)
            },
        })),
        (0u64..5).prop_map(|r| Rpc::AppendEntriesResponse(AppendEntriesResponse {
            round: r,
            outcome: AppendOutcome::StaleTerm,
        })),
        (small(), proptest::option::of(0u64..6), small()).prop_map(|(p, t, c)| {
            Rpc::AppendEntriesResponse(AppendEntriesResponse {
                round: 0,
                outcome: AppendOutcome::Rejected {
                    prev_log_index: idx(p),
                    conflict_term: t.map(term),
                    conflict_index: idx(c),
                },
            })
        }),
        (small(), 0u64..6, 0u64..8, any::<bool>()).prop_map(|(i, t, o, done)| {
            Rpc::InstallSnapshot(InstallSnapshot {
                last_included_index: idx(i),
                last_included_term: term(t),
                membership: Membership::from_voters([id(1), id(2), id(3)]),
                offset: o,
                data: Bytes::from_static(b"abcd"),
                done,
                round: o % 3,
            })
        }),
        (small(), 0u64..8, any::<bool>()).prop_map(|(i, o, done)| {
            Rpc::InstallSnapshotResponse(InstallSnapshotResponse {
                last_included_index: idx(i),
                next_offset: o,
                done,
                round: o % 3,
            })
        }),
        Just(Rpc::TimeoutNow),
    ]
}

fn event() -> impl Strategy<Value = Event<u64>> {
    prop_oneof![
        4 => Just(Event::Tick),
        6 => (node(), 0u64..6, rpc()).prop_map(|(from, t, rpc)| Event::Incoming(Message {
            from: id(from),
            term: term(t),
            rpc,
        })),
        1 => any::<u64>().prop_map(Event::ClientProposal),
        1 => proptest::collection::vec(any::<u64>(), 0..4).prop_map(Event::ClientProposalBatch),
        1 => (node(), 0u8..4).prop_map(|(n, kind)| Event::ProposeConfigChange(match kind {
            0 => ConfigChange::AddPeer(id(n)),
            1 => ConfigChange::AddLearner(id(n)),
            2 => ConfigChange::PromoteLearner(id(n)),
            _ => ConfigChange::RemovePeer(id(n)),
        })),
        1 => node().prop_map(|n| Event::TransferLeadership { target: id(n) }),
        1 => any::<u64>().prop_map(|id| Event::ProposeRead { id }),
        1 => small().prop_map(|i| Event::SnapshotTaken {
            last_included_index: idx(i),
            bytes: Bytes::from_static(b"snap"),
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_events_never_panic_and_keep_local_invariants(
        cluster_size in 1u64..=3,
        pre_vote in any::<bool>(),
        events in proptest::collection::vec(event(), 1..200),
    ) {
        let voters: Vec<u64> = (1..=cluster_size).collect();
        let config = EngineConfig { pre_vote, ..EngineConfig::default() };
        let mut engine = engine_with(1, &voters, config);
        for event in events {
            let term_before = engine.current_term();
            let vote_before = engine.voted_for();
            let commit_before = engine.commit_index();
            engine.step(event);
            engine.check_invariants();
            prop_assert!(engine.current_term() >= term_before, "term decreased");
            prop_assert!(engine.commit_index() >= commit_before, "commit decreased");
            prop_assert!(engine.commit_index() <= engine.last_log_index(), "commit past log");
            if engine.current_term() == term_before && vote_before.is_some() {
                prop_assert_eq!(engine.voted_for(), vote_before, "vote changed within a term");
            }
        }
    }
}
