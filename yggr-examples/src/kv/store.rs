//! The replicated state: the key-value map, and the address book of members (each member's
//! Raft and client addresses). Both change only by applying commands from the log, so every
//! node holds the same book and can redirect a client to any leader, one added later too.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::{Buf, BufMut, Bytes};
use yggr::{DecodeError, NodeId, SnapshotError, StateMachine, TcpHandle};

/// Where a member listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its Raft (peer-to-peer) address.
    pub raft: SocketAddr,
    /// Its client (Redis protocol) address.
    pub client: SocketAddr,
}

/// The address book, shared between the state machine (which writes it as commands apply)
/// and the client server (which reads it to redirect).
pub type AddressBook = Arc<RwLock<BTreeMap<NodeId, Member>>>;

/// A write, as it travels through the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvCommand {
    /// `SET key value`.
    Set {
        /// The key.
        key: Bytes,
        /// The new value.
        value: Bytes,
    },
    /// `DEL key...`: answers how many existed.
    Delete {
        /// The keys.
        keys: Vec<Bytes>,
    },
    /// `INCR` / `INCRBY`: answers the new value.
    IncrementBy {
        /// The key.
        key: Bytes,
        /// The increment.
        by: i64,
    },
    /// `CAS key expected new`: replaces the value only if it equals `expected`.
    CompareAndSet {
        /// The key.
        key: Bytes,
        /// The value it must hold now.
        expected: Bytes,
        /// The value it then takes.
        new: Bytes,
    },
    /// Records (or moves) a member's addresses.
    SetMember {
        /// The member.
        id: NodeId,
        /// Where it listens.
        member: Member,
    },
    /// Drops a removed member's addresses.
    ForgetMember {
        /// The member.
        id: NodeId,
    },
}

/// What applying a [`KvCommand`] answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvResponse {
    /// Done (`SET`, and the address book commands).
    Ok,
    /// A number: keys deleted, the value after an increment, or 1/0 for a compare-and-set.
    Integer(i64),
    /// The value to increment does not hold a 64-bit integer.
    NotAnInteger,
    /// The increment would overflow.
    Overflow,
}

/// The key-value state machine.
pub struct KvStore {
    me: NodeId,
    data: HashMap<Bytes, Bytes>,
    book: AddressBook,
    /// The transport's address book, kept in step with the replicated one so this node can
    /// reach members added after it started.
    peers: Option<TcpHandle>,
}

impl Clone for KvStore {
    /// A copy of the data and of the address book as it stands, detached from this store's
    /// published book and transport: a copy (a model in a test, say) never changes what the
    /// service's own store publishes.
    fn clone(&self) -> KvStore {
        let book = self
            .book
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone();
        KvStore {
            me: self.me,
            data: self.data.clone(),
            book: Arc::new(RwLock::new(book)),
            peers: None,
        }
    }
}

impl KvStore {
    /// An empty store for node `me`, publishing its address book to `book` and `peers`.
    pub fn new(me: NodeId, book: AddressBook, peers: Option<TcpHandle>) -> KvStore {
        KvStore {
            me,
            data: HashMap::new(),
            book,
            peers,
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &[u8]) -> Option<Bytes> {
        self.data.get(key).cloned()
    }

    /// Whether `key` holds a value.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.data.contains_key(key)
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no key holds a value.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn set_member(&mut self, id: NodeId, member: Member) {
        if id != self.me
            && let Some(peers) = &self.peers
        {
            peers.add_peer(id, member.raft);
        }
        write_book(&self.book).insert(id, member);
    }

    fn forget_member(&mut self, id: NodeId) {
        if id != self.me
            && let Some(peers) = &self.peers
        {
            peers.remove_peer(id);
        }
        write_book(&self.book).remove(&id);
    }
}

fn write_book(book: &AddressBook) -> std::sync::RwLockWriteGuard<'_, BTreeMap<NodeId, Member>> {
    book.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl StateMachine for KvStore {
    type Command = KvCommand;
    type Response = KvResponse;

    fn encode_command(command: &KvCommand) -> Vec<u8> {
        encode(command)
    }

    fn decode_command(bytes: &[u8]) -> Result<KvCommand, DecodeError> {
        decode(bytes).map_err(DecodeError::new)
    }

    fn apply(&mut self, command: KvCommand) -> KvResponse {
        match command {
            KvCommand::Set { key, value } => {
                self.data.insert(key, value);
                KvResponse::Ok
            }
            KvCommand::Delete { keys } => {
                let removed = keys
                    .iter()
                    .filter(|key| self.data.remove(*key).is_some())
                    .count();
                KvResponse::Integer(removed as i64)
            }
            KvCommand::IncrementBy { key, by } => {
                let current = match self.data.get(&key) {
                    None => 0,
                    Some(value) => match parse_integer(value) {
                        Some(number) => number,
                        None => return KvResponse::NotAnInteger,
                    },
                };
                let Some(next) = current.checked_add(by) else {
                    return KvResponse::Overflow;
                };
                self.data.insert(key, Bytes::from(next.to_string()));
                KvResponse::Integer(next)
            }
            KvCommand::CompareAndSet { key, expected, new } => {
                if self.data.get(&key) == Some(&expected) {
                    self.data.insert(key, new);
                    KvResponse::Integer(1)
                } else {
                    KvResponse::Integer(0)
                }
            }
            KvCommand::SetMember { id, member } => {
                self.set_member(id, member);
                KvResponse::Ok
            }
            KvCommand::ForgetMember { id } => {
                self.forget_member(id);
                KvResponse::Ok
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let book = self
            .book
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.put_u32_le(book.len() as u32);
        for (id, member) in book.iter() {
            out.put_u64_le(id.get());
            put_bytes(&mut out, member.raft.to_string().as_bytes());
            put_bytes(&mut out, member.client.to_string().as_bytes());
        }
        out.put_u64_le(self.data.len() as u64);
        // In key order: equal stores give equal snapshots, on every node and in every run
        // (a hash map's order differs between processes).
        let mut pairs: Vec<(&Bytes, &Bytes)> = self.data.iter().collect();
        pairs.sort_unstable_by(|left, right| left.0.cmp(right.0));
        for (key, value) in pairs {
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        Ok(out)
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        // The snapshot was checksummed by the storage and the transport; bytes that do not
        // parse are a bug, and a panic here stops the node (Fatal) rather than serve a guess.
        let (book, data) = decode_snapshot(&bytes).expect("invariant: a snapshot this store wrote");
        self.data = data;
        let old: Vec<NodeId> = self
            .book
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .copied()
            .collect();
        for id in old {
            if !book.contains_key(&id) {
                self.forget_member(id);
            }
        }
        for (id, member) in book {
            self.set_member(id, member);
        }
    }
}

/// A value as Redis reads an integer: an optional minus sign and decimal digits, nothing
/// else — no plus sign, spaces or leading zeros (`0` itself excepted), and no `-0`.
pub fn parse_integer(bytes: &[u8]) -> Option<i64> {
    let digits = bytes.strip_prefix(b"-").unwrap_or(bytes);
    let canonical = !digits.is_empty()
        && digits.iter().all(u8::is_ascii_digit)
        && (digits == b"0" || digits[0] != b'0')
        && bytes != b"-0";
    if !canonical {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

const SNAPSHOT_MAGIC: &[u8; 4] = b"KVS1";

const TAG_SET: u8 = 1;
const TAG_DELETE: u8 = 2;
const TAG_INCREMENT: u8 = 3;
const TAG_CAS: u8 = 4;
const TAG_SET_MEMBER: u8 = 5;
const TAG_FORGET_MEMBER: u8 = 6;

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32_le(bytes.len() as u32);
    out.extend_from_slice(bytes);
}

/// A command's log bytes: a tag, then its fields, each length-prefixed.
pub fn encode(command: &KvCommand) -> Vec<u8> {
    let mut out = Vec::new();
    match command {
        KvCommand::Set { key, value } => {
            out.push(TAG_SET);
            put_bytes(&mut out, key);
            put_bytes(&mut out, value);
        }
        KvCommand::Delete { keys } => {
            out.push(TAG_DELETE);
            out.put_u32_le(keys.len() as u32);
            for key in keys {
                put_bytes(&mut out, key);
            }
        }
        KvCommand::IncrementBy { key, by } => {
            out.push(TAG_INCREMENT);
            put_bytes(&mut out, key);
            out.put_i64_le(*by);
        }
        KvCommand::CompareAndSet { key, expected, new } => {
            out.push(TAG_CAS);
            put_bytes(&mut out, key);
            put_bytes(&mut out, expected);
            put_bytes(&mut out, new);
        }
        KvCommand::SetMember { id, member } => {
            out.push(TAG_SET_MEMBER);
            out.put_u64_le(id.get());
            put_bytes(&mut out, member.raft.to_string().as_bytes());
            put_bytes(&mut out, member.client.to_string().as_bytes());
        }
        KvCommand::ForgetMember { id } => {
            out.push(TAG_FORGET_MEMBER);
            out.put_u64_le(id.get());
        }
    }
    out
}

/// Reads fields off the front of a byte slice, failing cleanly on a short or bad one.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, &'static str> {
        if self.bytes.is_empty() {
            return Err("truncated");
        }
        Ok(self.bytes.get_u8())
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        if self.bytes.len() < 4 {
            return Err("truncated");
        }
        Ok(self.bytes.get_u32_le())
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        if self.bytes.len() < 8 {
            return Err("truncated");
        }
        Ok(self.bytes.get_u64_le())
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let length = self.u32()? as usize;
        if self.bytes.len() < length {
            return Err("truncated");
        }
        let (field, rest) = self.bytes.split_at(length);
        self.bytes = rest;
        Ok(field)
    }

    fn owned(&mut self) -> Result<Bytes, &'static str> {
        self.bytes().map(Bytes::copy_from_slice)
    }

    fn node_id(&mut self) -> Result<NodeId, &'static str> {
        NodeId::new(self.u64()?).ok_or("node id 0")
    }

    fn address(&mut self) -> Result<SocketAddr, &'static str> {
        std::str::from_utf8(self.bytes()?)
            .ok()
            .and_then(|text| text.parse().ok())
            .ok_or("bad address")
    }

    fn finish<T>(self, value: T) -> Result<T, &'static str> {
        if self.bytes.is_empty() {
            Ok(value)
        } else {
            Err("trailing bytes")
        }
    }
}

/// The command in `bytes`, or why they are not one.
///
/// # Errors
/// A short, trailing or unknown field.
pub fn decode(bytes: &[u8]) -> Result<KvCommand, &'static str> {
    let mut reader = Reader { bytes };
    let command = match reader.u8()? {
        TAG_SET => KvCommand::Set {
            key: reader.owned()?,
            value: reader.owned()?,
        },
        TAG_DELETE => {
            let count = reader.u32()? as usize;
            // Each key takes at least its 4-byte length: a count beyond that is a lie.
            if count > reader.bytes.len() / 4 {
                return Err("bad key count");
            }
            let keys = (0..count)
                .map(|_| reader.owned())
                .collect::<Result<Vec<_>, _>>()?;
            KvCommand::Delete { keys }
        }
        TAG_INCREMENT => KvCommand::IncrementBy {
            key: reader.owned()?,
            by: reader.u64()? as i64,
        },
        TAG_CAS => KvCommand::CompareAndSet {
            key: reader.owned()?,
            expected: reader.owned()?,
            new: reader.owned()?,
        },
        TAG_SET_MEMBER => KvCommand::SetMember {
            id: reader.node_id()?,
            member: Member {
                raft: reader.address()?,
                client: reader.address()?,
            },
        },
        TAG_FORGET_MEMBER => KvCommand::ForgetMember {
            id: reader.node_id()?,
        },
        _ => return Err("unknown command tag"),
    };
    reader.finish(command)
}

type SnapshotParts = (BTreeMap<NodeId, Member>, HashMap<Bytes, Bytes>);

fn decode_snapshot(bytes: &[u8]) -> Result<SnapshotParts, &'static str> {
    let mut reader = snapshot_reader(bytes)?;
    let book = read_book(&mut reader)?;
    let count = reader.u64()?;
    if count > reader.bytes.len() as u64 / 8 {
        return Err("bad key count");
    }
    let mut data = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        data.insert(reader.owned()?, reader.owned()?);
    }
    reader.finish((book, data))
}

/// The address book at the front of a snapshot, read without touching its keys and values.
///
/// # Errors
/// The bytes are not a snapshot this store wrote, or its book is short or bad.
pub(crate) fn decode_snapshot_book(bytes: &[u8]) -> Result<BTreeMap<NodeId, Member>, &'static str> {
    read_book(&mut snapshot_reader(bytes)?)
}

fn snapshot_reader(bytes: &[u8]) -> Result<Reader<'_>, &'static str> {
    match bytes.strip_prefix(SNAPSHOT_MAGIC) {
        Some(rest) => Ok(Reader { bytes: rest }),
        None => Err("not a KV snapshot"),
    }
}

fn read_book(reader: &mut Reader<'_>) -> Result<BTreeMap<NodeId, Member>, &'static str> {
    let members = reader.u32()?;
    let mut book = BTreeMap::new();
    for _ in 0..members {
        let id = reader.node_id()?;
        let member = Member {
            raft: reader.address()?,
            client: reader.address()?,
        };
        book.insert(id, member);
    }
    Ok(book)
}

/// Whether `bytes`, a command's log bytes, claim to be a [`KvCommand::SetMember`]: a look
/// at the tag alone, so that a scan of the log decodes (and copies) nothing else.
pub(crate) fn is_set_member(bytes: &[u8]) -> bool {
    bytes.first() == Some(&TAG_SET_MEMBER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    fn store() -> KvStore {
        KvStore::new(id(1), AddressBook::default(), None)
    }

    fn bytes(text: &str) -> Bytes {
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn every_command() -> Vec<KvCommand> {
        vec![
            KvCommand::Set {
                key: bytes("k"),
                value: bytes("v"),
            },
            KvCommand::Delete {
                keys: vec![bytes("a"), bytes("")],
            },
            KvCommand::IncrementBy {
                key: bytes("n"),
                by: -7,
            },
            KvCommand::CompareAndSet {
                key: bytes("k"),
                expected: bytes("v"),
                new: bytes("w"),
            },
            KvCommand::SetMember {
                id: id(4),
                member: Member {
                    raft: "127.0.0.1:7004".parse().unwrap(),
                    client: "127.0.0.1:6004".parse().unwrap(),
                },
            },
            KvCommand::ForgetMember { id: id(4) },
        ]
    }

    #[test]
    fn every_command_round_trips_and_every_truncation_is_refused() {
        for command in every_command() {
            let encoded = encode(&command);
            assert_eq!(decode(&encoded), Ok(command.clone()));
            for cut in 0..encoded.len() {
                assert!(decode(&encoded[..cut]).is_err(), "{command:?} cut at {cut}");
            }
            let mut longer = encoded.clone();
            longer.push(0);
            assert!(decode(&longer).is_err());
        }
        assert!(decode(&[99]).is_err());
        assert!(decode(&[TAG_DELETE, 0xff, 0xff, 0xff, 0xff]).is_err());
    }

    #[test]
    fn increments_follow_redis_rules() {
        let mut store = store();
        let incr = |by| KvCommand::IncrementBy {
            key: bytes("n"),
            by,
        };
        assert_eq!(store.apply(incr(1)), KvResponse::Integer(1));
        assert_eq!(store.apply(incr(41)), KvResponse::Integer(42));
        store.apply(KvCommand::Set {
            key: bytes("n"),
            value: bytes("x1"),
        });
        assert_eq!(store.apply(incr(1)), KvResponse::NotAnInteger);
        store.apply(KvCommand::Set {
            key: bytes("n"),
            value: bytes(&i64::MAX.to_string()),
        });
        assert_eq!(store.apply(incr(1)), KvResponse::Overflow);
        assert_eq!(parse_integer(b" 1"), None);
        assert_eq!(parse_integer(b"-12"), Some(-12));
        assert_eq!(parse_integer(b"0"), Some(0));
        for refused in [
            &b"007"[..],
            b"-0",
            b"+5",
            b"",
            b"-",
            b"1e3",
            b"99999999999999999999",
        ] {
            assert_eq!(parse_integer(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn compare_and_set_replaces_only_a_matching_value_and_never_a_missing_key() {
        let mut store = store();
        let cas = |expected: &str, new: &str| KvCommand::CompareAndSet {
            key: bytes("k"),
            expected: bytes(expected),
            new: bytes(new),
        };
        assert_eq!(store.apply(cas("", "a")), KvResponse::Integer(0));
        assert_eq!(store.get(b"k"), None);
        store.apply(KvCommand::Set {
            key: bytes("k"),
            value: bytes("a"),
        });
        assert_eq!(store.apply(cas("b", "c")), KvResponse::Integer(0));
        assert_eq!(store.apply(cas("a", "c")), KvResponse::Integer(1));
        assert_eq!(store.get(b"k"), Some(bytes("c")));
    }

    #[test]
    fn stores_holding_the_same_data_take_byte_identical_snapshots() {
        let keys: Vec<String> = (0..64).map(|index| format!("key-{index}")).collect();
        let mut forward = store();
        let mut backward = store();
        for key in &keys {
            forward.apply(KvCommand::Set {
                key: bytes(key),
                value: bytes("v"),
            });
        }
        for key in keys.iter().rev() {
            backward.apply(KvCommand::Set {
                key: bytes(key),
                value: bytes("v"),
            });
        }
        assert_eq!(forward.snapshot().unwrap(), backward.snapshot().unwrap());
    }

    #[test]
    fn a_clone_holds_the_same_data_and_never_touches_the_original_book() {
        let mut original = store();
        original.apply(KvCommand::Set {
            key: bytes("a"),
            value: bytes("1"),
        });
        let mut copy = original.clone();
        assert_eq!(copy.get(b"a"), Some(bytes("1")));
        copy.apply(KvCommand::Set {
            key: bytes("a"),
            value: bytes("2"),
        });
        assert_eq!(original.get(b"a"), Some(bytes("1")));
        let member = Member {
            raft: "127.0.0.1:7001".parse().unwrap(),
            client: "127.0.0.1:6001".parse().unwrap(),
        };
        copy.apply(KvCommand::SetMember { id: id(2), member });
        assert!(
            original.book.read().unwrap().is_empty(),
            "the copy wrote into the original's book"
        );
    }

    #[test]
    fn a_snapshot_restores_the_data_and_the_address_book() {
        let mut source = store();
        for command in every_command().into_iter().take(5) {
            source.apply(command);
        }
        let snapshot = source.snapshot().unwrap();
        let book = AddressBook::default();
        let mut restored = KvStore::new(id(2), book.clone(), None);
        restored.restore(snapshot);
        assert_eq!(restored.get(b"k"), Some(bytes("w")));
        assert_eq!(restored.get(b"n"), Some(bytes("-7")));
        assert_eq!(restored.len(), 2);
        assert!(book.read().unwrap().contains_key(&id(4)));
    }
}
