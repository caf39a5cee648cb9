//! Where the members listen, recovered from a node's stored state before it starts.
//!
//! Members' addresses travel through the log ([`KvCommand::SetMember`]) and reach the
//! transport when that entry is applied. A restarted node applies nothing until a leader tells
//! it the commit index, and it cannot hear a leader its transport does not know: a founder
//! restarted while a member added later leads would wait for good. So, before the node starts,
//! [`recover_addresses`] reads every address its snapshot and log hold, committed or not, and
//! the caller gives them to the transport. An address is only where to connect, never state:
//! applying the log later records the same addresses (or newer ones) in the same order.
//!
//! [`Preloaded`] lets the caller read the stored state once, for both this and the node.

use std::collections::BTreeMap;
use std::future::Future;

use yggr::{
    EntryPayload, Membership, NodeId, RecoveredSnapshot, Storage, StorageWrite, StoredState,
};

use super::store::{self, KvCommand, Member};

/// What [`recover_addresses`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveredAddresses {
    /// Each member's addresses, as the last entry naming it put them.
    pub members: BTreeMap<NodeId, Member>,
    /// Commands tagged as [`KvCommand::SetMember`] that did not decode, plus one for a
    /// snapshot whose address book did not. They are skipped here; the node refuses such an
    /// entry itself if it ever comes to apply it.
    pub undecodable: usize,
}

/// The members' addresses `stored` names: the snapshot's address book, then every
/// [`KvCommand::SetMember`] in the log in order, a later one for the same id replacing an
/// earlier one. One pass over the log that decodes only `SetMember` commands, so keys and
/// values are neither decoded nor copied.
///
/// A [`KvCommand::ForgetMember`] is not followed: the address stays. Keeping it is harmless
/// (nothing is sent to a node outside the configuration, and applying the entry drops the
/// address in its turn), while dropping it on an entry not yet committed, which a new leader
/// may still overwrite, could leave this node unable to reach a member again.
pub fn recover_addresses(stored: &StoredState) -> RecoveredAddresses {
    let mut recovered = RecoveredAddresses::default();
    if let Some(snapshot) = &stored.snapshot {
        match store::decode_snapshot_book(&snapshot.bytes) {
            Ok(book) => recovered.members = book,
            Err(_) => recovered.undecodable += 1,
        }
    }
    for entry in &stored.log {
        let EntryPayload::Command(bytes) = &entry.payload else {
            continue;
        };
        if !store::is_set_member(bytes) {
            continue;
        }
        match store::decode(bytes) {
            Ok(KvCommand::SetMember { id, member }) => {
                recovered.members.insert(id, member);
            }
            _ => recovered.undecodable += 1,
        }
    }
    recovered
}

/// A storage whose stored state was read before the node started, so that the caller can look
/// at it (for [`recover_addresses`]) and the node still reads it only once: the node's first
/// [`Storage::load`] is answered with it, everything else goes to the storage.
#[derive(Debug)]
pub struct Preloaded<S> {
    storage: S,
    /// What the storage's `load` returned, until the node's first `load` takes it.
    stored: Option<Option<StoredState>>,
}

impl<S: Storage> Preloaded<S> {
    /// Loads `storage`'s state and keeps it for the node.
    ///
    /// # Errors
    /// The storage's `load` failed.
    pub async fn read(mut storage: S) -> Result<Preloaded<S>, S::Error> {
        let stored = storage.load().await?;
        Ok(Preloaded {
            storage,
            stored: Some(stored),
        })
    }

    /// The stored state read, or `None` when the storage never held a node (or the node has
    /// already taken it).
    pub fn stored(&self) -> Option<&StoredState> {
        self.stored.as_ref().and_then(Option::as_ref)
    }
}

impl<S: Storage> Storage for Preloaded<S> {
    type Error = S::Error;

    async fn load(&mut self) -> Result<Option<StoredState>, S::Error> {
        match self.stored.take() {
            Some(stored) => Ok(stored),
            None => self.storage.load().await,
        }
    }

    fn bootstrap(
        &mut self,
        node_id: NodeId,
        founding: &Membership,
    ) -> impl Future<Output = Result<(), S::Error>> + Send {
        self.storage.bootstrap(node_id, founding)
    }

    fn persist(
        &mut self,
        writes: Vec<StorageWrite>,
    ) -> impl Future<Output = Result<(), S::Error>> + Send {
        self.storage.persist(writes)
    }

    fn incarnation(&self) -> Option<u64> {
        self.storage.incarnation()
    }

    fn prepare_snapshot(
        &self,
        snapshot: &RecoveredSnapshot,
    ) -> impl Future<Output = Result<(), S::Error>> + Send + 'static {
        self.storage.prepare_snapshot(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use yggr::{LogEntry, LogIndex, MemStorage, StateMachine, Term};

    use super::*;
    use crate::kv::store::{AddressBook, KvStore, encode};

    /// The term every test entry carries; recovering addresses does not look at it.
    const TEST_TERM: Term = Term::new(1);

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    fn member(raft_port: u16) -> Member {
        Member {
            raft: format!("127.0.0.1:{raft_port}").parse().unwrap(),
            client: format!("127.0.0.1:{}", raft_port + 1000).parse().unwrap(),
        }
    }

    fn set_member(raw: u64, raft_port: u16) -> Bytes {
        Bytes::from(encode(&KvCommand::SetMember {
            id: id(raw),
            member: member(raft_port),
        }))
    }

    fn stored(snapshot_book: &[(u64, u16)], commands: Vec<Bytes>) -> StoredState {
        let snapshot = (!snapshot_book.is_empty()).then(|| {
            let mut source = KvStore::new(id(1), AddressBook::default(), None);
            for (raw, port) in snapshot_book {
                source.apply(store::decode(&set_member(*raw, *port)).unwrap());
            }
            source.apply(KvCommand::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            });
            RecoveredSnapshot {
                last_included_index: LogIndex::new(10),
                last_included_term: TEST_TERM,
                membership: Membership::default(),
                bytes: Bytes::from(source.snapshot().unwrap()),
            }
        });
        let floor = snapshot.as_ref().map_or(0, |_| 10);
        let log = commands
            .into_iter()
            .enumerate()
            .map(|(position, bytes)| LogEntry {
                term: TEST_TERM,
                index: LogIndex::new(floor + 1 + position as u64),
                payload: EntryPayload::Command(bytes),
            })
            .collect();
        StoredState {
            snapshot,
            log,
            ..StoredState::default()
        }
    }

    fn book(members: &[(u64, u16)]) -> BTreeMap<NodeId, Member> {
        members
            .iter()
            .map(|(raw, port)| (id(*raw), member(*port)))
            .collect()
    }

    #[test]
    fn a_snapshot_alone_gives_its_address_book() {
        let recovered = recover_addresses(&stored(&[(1, 7001), (2, 7002)], vec![]));
        assert_eq!(recovered.members, book(&[(1, 7001), (2, 7002)]));
        assert_eq!(recovered.undecodable, 0);
    }

    #[test]
    fn a_log_alone_gives_every_member_it_records_and_nothing_from_other_commands() {
        let commands = vec![
            Bytes::from(encode(&KvCommand::Set {
                key: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            })),
            set_member(4, 7004),
            set_member(5, 7005),
        ];
        let mut state = stored(&[], commands);
        state.log.push(LogEntry {
            term: TEST_TERM,
            index: LogIndex::new(4),
            payload: EntryPayload::Noop,
        });
        let recovered = recover_addresses(&state);
        assert_eq!(recovered.members, book(&[(4, 7004), (5, 7005)]));
        assert_eq!(recovered.undecodable, 0);
    }

    #[test]
    fn a_later_entry_for_the_same_member_replaces_the_snapshot_and_earlier_entries() {
        let commands = vec![
            set_member(2, 7102),
            set_member(4, 7004),
            set_member(2, 7202),
        ];
        let recovered = recover_addresses(&stored(&[(1, 7001), (2, 7002)], commands));
        assert_eq!(recovered.members, book(&[(1, 7001), (2, 7202), (4, 7004)]));
    }

    #[test]
    fn a_forgotten_member_keeps_its_address_until_the_entry_is_applied() {
        let forget = Bytes::from(encode(&KvCommand::ForgetMember { id: id(4) }));
        let recovered = recover_addresses(&stored(&[], vec![set_member(4, 7004), forget]));
        assert_eq!(recovered.members, book(&[(4, 7004)]));
    }

    #[test]
    fn undecodable_commands_and_snapshots_are_counted_and_skipped_without_a_panic() {
        let mut truncated = set_member(6, 7006).to_vec();
        truncated.pop();
        let commands = vec![
            Bytes::new(),
            Bytes::from_static(&[0xff, 0x00, 0x01]),
            Bytes::from(truncated),
            set_member(4, 7004),
        ];
        let mut state = stored(&[(1, 7001)], commands);
        if let Some(snapshot) = state.snapshot.as_mut() {
            snapshot.bytes = Bytes::from_static(b"KVS1\xff");
        }
        let recovered = recover_addresses(&state);
        assert_eq!(recovered.members, book(&[(4, 7004)]));
        // The truncated SetMember and the snapshot; other garbage is not ours to judge here.
        assert_eq!(recovered.undecodable, 2);
    }

    #[tokio::test]
    async fn the_node_gets_the_preloaded_state_once_and_the_storage_after_that() {
        let mut storage = MemStorage::new();
        let founders = Membership::from_voters([id(1)]);
        storage.bootstrap(id(1), &founders).await.unwrap();
        let mut preloaded = Preloaded::read(storage.clone()).await.unwrap();
        assert_eq!(preloaded.stored().unwrap().founding, founders);
        let first = preloaded.load().await.unwrap().unwrap();
        assert_eq!(first.founding, founders);
        assert!(preloaded.stored().is_none());
        let entry = LogEntry {
            term: TEST_TERM,
            index: LogIndex::new(1),
            payload: EntryPayload::Command(set_member(2, 7002)),
        };
        preloaded
            .persist(vec![StorageWrite::Entries(vec![entry])])
            .await
            .unwrap();
        let again = storage.load().await.unwrap().unwrap();
        assert_eq!(again.log.len(), 1);
        assert_eq!(preloaded.load().await.unwrap().unwrap().log.len(), 1);
    }
}
