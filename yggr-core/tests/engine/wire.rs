//! The protobuf mapping: every message round-trips, and arbitrary bytes never panic.

use crate::common::*;
use bytes::Bytes;
use proptest::prelude::*;
use yggr_core::wire::{WireError, decode_entry, decode_message, encode_entry, encode_message};
use yggr_core::{
    AppendEntries, AppendEntriesResponse, AppendOutcome, ConfigChange, EntryPayload,
    InstallSnapshot, InstallSnapshotResponse, LogEntry, Membership, Message, Rpc, VoteRequest,
    VoteResponse,
};

fn encode_u64(command: &u64) -> Vec<u8> {
    command.to_le_bytes().to_vec()
}

fn decode_u64(bytes: &[u8]) -> Result<u64, String> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| "expected 8 bytes".to_string())?;
    Ok(u64::from_le_bytes(array))
}

fn node_id() -> impl Strategy<Value = yggr_core::NodeId> {
    (1u64..=u64::MAX).prop_map(id)
}

fn membership() -> impl Strategy<Value = Membership> {
    (
        proptest::collection::btree_set(1u64..50, 0..5),
        proptest::collection::btree_set(50u64..100, 0..3),
    )
        .prop_map(|(voters, learners)| Membership {
            voters: voters.into_iter().map(id).collect(),
            learners: learners.into_iter().map(id).collect(),
        })
}

fn payload() -> impl Strategy<Value = EntryPayload<u64>> {
    prop_oneof![
        Just(EntryPayload::Noop),
        any::<u64>().prop_map(EntryPayload::Command),
        (node_id(), 0u8..4, membership()).prop_map(|(node, kind, membership)| {
            let change = match kind {
                0 => ConfigChange::AddPeer(node),
                1 => ConfigChange::AddLearner(node),
                2 => ConfigChange::PromoteLearner(node),
                _ => ConfigChange::RemovePeer(node),
            };
            EntryPayload::ConfigChange { change, membership }
        }),
    ]
}

fn log_entry() -> impl Strategy<Value = LogEntry<u64>> {
    (any::<u64>(), any::<u64>(), payload()).prop_map(|(t, i, payload)| LogEntry {
        term: term(t),
        index: idx(i),
        payload,
    })
}

fn rpc() -> impl Strategy<Value = Rpc<u64>> {
    let vote =
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(i, t, transfer)| VoteRequest {
            last_log_index: idx(i),
            last_log_term: term(t),
            leadership_transfer: transfer,
        });
    prop_oneof![
        vote.clone().prop_map(Rpc::RequestVote),
        vote.prop_map(Rpc::RequestPreVote),
        any::<bool>().prop_map(|granted| Rpc::RequestVoteResponse(VoteResponse { granted })),
        any::<bool>().prop_map(|granted| Rpc::RequestPreVoteResponse(VoteResponse { granted })),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::collection::vec(log_entry(), 0..4),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(
                |(p, pt, entries, c, round)| Rpc::AppendEntries(AppendEntries {
                    prev_log_index: idx(p),
                    prev_log_term: term(pt),
                    entries,
                    leader_commit: idx(c),
                    round,
                })
            ),
        (any::<u64>(), any::<u64>()).prop_map(|(round, m)| Rpc::AppendEntriesResponse(
            AppendEntriesResponse {
                round,
                outcome: AppendOutcome::Accepted {
                    match_index: idx(m)
                },
            }
        )),
        any::<u64>().prop_map(|round| Rpc::AppendEntriesResponse(AppendEntriesResponse {
            round,
            outcome: AppendOutcome::StaleTerm,
        })),
        (
            any::<u64>(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            any::<u64>()
        )
            .prop_map(|(round, p, t, c)| Rpc::AppendEntriesResponse(
                AppendEntriesResponse {
                    round,
                    outcome: AppendOutcome::Rejected {
                        prev_log_index: idx(p),
                        conflict_term: t.map(term),
                        conflict_index: idx(c),
                    },
                }
            )),
        (
            any::<u64>(),
            any::<u64>(),
            membership(),
            any::<u64>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(i, t, membership, offset, data, done, round)| {
                Rpc::InstallSnapshot(InstallSnapshot {
                    last_included_index: idx(i),
                    last_included_term: term(t),
                    membership,
                    offset,
                    data: Bytes::from(data),
                    done,
                    round,
                })
            }),
        (any::<u64>(), any::<u64>(), any::<bool>(), any::<u64>()).prop_map(
            |(i, o, done, round)| {
                Rpc::InstallSnapshotResponse(InstallSnapshotResponse {
                    last_included_index: idx(i),
                    next_offset: o,
                    done,
                    round,
                })
            }
        ),
        Just(Rpc::TimeoutNow),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn every_message_round_trips(from in node_id(), t in any::<u64>(), rpc in rpc()) {
        let message = Message { from, term: term(t), rpc };
        let bytes = encode_message(&message, encode_u64);
        let decoded = decode_message(&bytes, decode_u64).unwrap();
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn every_entry_round_trips(entry in log_entry()) {
        let bytes = encode_entry(&entry, encode_u64);
        prop_assert_eq!(decode_entry(&bytes, decode_u64).unwrap(), entry);
    }

    #[test]
    fn arbitrary_bytes_decode_to_a_message_or_an_error_never_a_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256)
    ) {
        let _ = decode_message(&bytes, decode_u64);
        let _ = decode_entry(&bytes, decode_u64);
    }

    #[test]
    fn truncated_messages_are_reported_not_misread(rpc in rpc(), cut in 1usize..64) {
        let message = Message { from: id(1), term: term(1), rpc };
        let bytes = encode_message(&message, encode_u64);
        if cut < bytes.len() {
            let truncated = &bytes[..bytes.len() - cut];
            if let Ok(decoded) = decode_message(truncated, decode_u64) {
                // A shorter prefix may still parse as a valid protobuf message; it must then be
                // a different message, never silently identical.
                prop_assert_ne!(decoded, message);
            }
        }
    }
}

#[test]
fn zero_sender_is_rejected() {
    let bytes = encode_message(
        &Message {
            from: id(1),
            term: term(1),
            rpc: Rpc::<u64>::TimeoutNow,
        },
        encode_u64,
    );
    // Re-encode with from = 0 through the generated type.
    use prost::Message as _;
    let mut envelope = yggr_core::wire::proto::Envelope::decode(bytes.as_slice()).unwrap();
    envelope.from = 0;
    let error = decode_message(&envelope.encode_to_vec(), decode_u64).unwrap_err();
    assert!(matches!(error, WireError::ZeroNodeId("from")));
}

#[test]
fn undecodable_command_is_reported_with_its_index() {
    let message = Message {
        from: id(1),
        term: term(1),
        rpc: Rpc::AppendEntries(AppendEntries {
            prev_log_index: idx(0),
            prev_log_term: term(0),
            entries: vec![entry(1, 1, 5)],
            leader_commit: idx(0),
            round: 0,
        }),
    };
    let bytes = encode_message(&message, |_| vec![1, 2, 3]);
    let error = decode_message(&bytes, decode_u64).unwrap_err();
    assert!(matches!(error, WireError::Command { index: 1, .. }));
}

#[test]
fn overlapping_voter_and_learner_is_rejected() {
    use prost::Message as _;
    let raw = yggr_core::wire::proto::Membership {
        voters: vec![3],
        learners: vec![3],
    };
    let error = yggr_core::wire::decode_membership(&raw.encode_to_vec()).unwrap_err();
    assert!(matches!(error, WireError::OverlappingMembership(3)));
}

#[test]
fn byte_commands_decode_without_copying_and_match_the_copying_decoders() {
    use yggr_core::wire::{decode_entry_bytes, decode_message_bytes};
    let command = Bytes::from(vec![7u8; 64]);
    let entry = LogEntry {
        index: idx(3),
        term: term(2),
        payload: EntryPayload::Command(command.clone()),
    };
    let encoded = Bytes::from(encode_entry(&entry, |bytes: &Bytes| bytes.to_vec()));
    let decoded = decode_entry_bytes(encoded.clone()).unwrap();
    assert_eq!(decoded, entry);
    let EntryPayload::Command(inner) = &decoded.payload else {
        panic!("a command entry");
    };
    let range = encoded.as_ptr() as usize..encoded.as_ptr() as usize + encoded.len();
    assert!(
        range.contains(&(inner.as_ptr() as usize)),
        "the command is a slice of the input"
    );
    let message = Message {
        from: id(2),
        term: term(2),
        rpc: Rpc::AppendEntries(AppendEntries {
            prev_log_index: idx(2),
            prev_log_term: term(1),
            entries: vec![entry],
            leader_commit: idx(1),
            round: 4,
        }),
    };
    let encoded = Bytes::from(encode_message(&message, |bytes: &Bytes| bytes.to_vec()));
    let copied = decode_message(&encoded, |bytes| {
        Ok::<_, String>(Bytes::copy_from_slice(bytes))
    })
    .unwrap();
    assert_eq!(decode_message_bytes(encoded).unwrap(), copied);
    assert!(decode_entry_bytes(Bytes::from_static(&[0xff, 0xff, 0xff])).is_err());
}

#[test]
fn every_rpc_has_its_own_name_for_logs() {
    use yggr_core::{
        AppendEntries, AppendEntriesResponse, AppendOutcome, InstallSnapshot,
        InstallSnapshotResponse, LogIndex, Membership, Term, VoteRequest, VoteResponse,
    };
    let vote = VoteRequest {
        last_log_index: LogIndex::ZERO,
        last_log_term: Term::ZERO,
        leadership_transfer: false,
    };
    let rpcs: Vec<Rpc<u64>> = vec![
        Rpc::RequestVote(vote),
        Rpc::RequestVoteResponse(VoteResponse { granted: true }),
        Rpc::RequestPreVote(vote),
        Rpc::RequestPreVoteResponse(VoteResponse { granted: false }),
        Rpc::AppendEntries(AppendEntries {
            prev_log_index: LogIndex::ZERO,
            prev_log_term: Term::ZERO,
            entries: Vec::new(),
            leader_commit: LogIndex::ZERO,
            round: 0,
        }),
        Rpc::AppendEntriesResponse(AppendEntriesResponse {
            round: 0,
            outcome: AppendOutcome::StaleTerm,
        }),
        Rpc::InstallSnapshot(InstallSnapshot {
            last_included_index: LogIndex::ZERO,
            last_included_term: Term::ZERO,
            membership: Membership::default(),
            offset: 0,
            data: bytes::Bytes::new(),
            done: true,
            round: 0,
        }),
        Rpc::InstallSnapshotResponse(InstallSnapshotResponse {
            last_included_index: LogIndex::ZERO,
            next_offset: 0,
            done: true,
            round: 0,
        }),
        Rpc::TimeoutNow,
    ];
    let names: std::collections::BTreeSet<&str> = rpcs.iter().map(Rpc::kind).collect();
    assert_eq!(names.len(), rpcs.len(), "{names:?}");
    assert!(names.iter().all(|name| !name.is_empty()));
    assert!(names.contains("append_entries") && names.contains("timeout_now"));
}

#[test]
fn a_configuration_with_voters_and_learners_round_trips_through_its_encoding() {
    let mut membership = Membership::from_voters([id(1), id(2), id(3)]);
    membership.learners.insert(id(4));
    let bytes = yggr_core::wire::encode_membership(&membership);
    assert!(
        !bytes.is_empty(),
        "a non-empty configuration encodes to some bytes"
    );
    let decoded = yggr_core::wire::decode_membership(&bytes).expect("its own encoding decodes");
    assert_eq!(decoded, membership);
}
