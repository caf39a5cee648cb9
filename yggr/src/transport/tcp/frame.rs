//! The bytes on a TCP connection between two nodes, parsed without doing any I/O.
//!
//! ```text
//! handshake, once, from the connecting side: a prefix, then (version 2) the identities
//! ┌────────────┬──────────────────┬────────────────┬────────────┬─────────────┬─────────────┐
//! │ "YGGRNET1" │ protocol version │ sender node id │ cluster id │ incarnation │ receiver's  │
//! │            │ (2)              │                │ of sender  │ of sender   │ incarnation │
//! │ 8 bytes    │ u32 LE           │ u64 LE         │ u64 LE     │ u64 LE      │ u64 LE      │
//! └────────────┴──────────────────┴────────────────┴────────────┴─────────────┴─────────────┘
//!   version 1 ends after the node id: no identities, taken as all unknown. The last field
//!   is the incarnation the sender last accepted from the receiver (0 if none); 0 anywhere
//!   means "unknown" and is never checked (module `crate::identity`)
//!
//! then frames, one per message
//! ┌─────────────┬───────────────────────────────────────────────┐
//! │ length (n)  │ protobuf Envelope (yggr_core::wire), n bytes  │
//! │ u32 LE      │                                               │
//! └─────────────┴───────────────────────────────────────────────┘
//!
//! or a keep-alive, from a writer whose connection has been quiet
//! ┌─────────────┐
//! │ length 0    │
//! │ u32 LE      │
//! └─────────────┘
//! ```
//!
//! A length above the frame limit is refused before anything is allocated for it. A length
//! of zero is a keep-alive: it carries no message (an Envelope is never empty: it names its
//! sender) and only shows the receiver, whose idle timeout it resets, that the writer lives.
//! Keep-alives are part of protocol version 1: no release has spoken version 1 without them
//! (0.1.0 is the first), so the version was not bumped. Version 2 adds the identities to the
//! handshake and nothing else; a version 1 handshake is still accepted (leniently: it says
//! nothing that could be checked), and this build sends version 2.
//! The connection is one-way: the accepting side never writes on it, so a writer that finds
//! anything to read has found the connection closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use yggr_core::wire::{WireError, decode_message_bytes, encode_message};
use yggr_core::{AppendEntries, Message, NodeId, Rpc};

use super::tls::TLS_HANDSHAKE_RECORD;

const HANDSHAKE_MAGIC: &[u8; 8] = b"YGGRNET1";
/// The protocol version this build sends.
pub(crate) const PROTOCOL_VERSION: u32 = 2;
/// The earlier version this build still accepts: a handshake without identities.
pub(crate) const PROTOCOL_VERSION_WITHOUT_IDENTITY: u32 = 1;
/// The handshake's prefix, all of a version 1 handshake: magic, version and sender id.
pub(crate) const HANDSHAKE_PREFIX_BYTES: usize = 8 + 4 + 8;
/// What follows the prefix in a version 2 handshake: cluster id, incarnation, and the
/// incarnation the sender knows the receiver by.
pub(crate) const HANDSHAKE_IDENTITY_BYTES: usize = 8 + 8 + 8;
/// A whole version 2 handshake.
pub(crate) const HANDSHAKE_BYTES: usize = HANDSHAKE_PREFIX_BYTES + HANDSHAKE_IDENTITY_BYTES;
const LENGTH_BYTES: usize = 4;

/// A keep-alive: a frame of length zero.
pub(crate) const KEEP_ALIVE: [u8; LENGTH_BYTES] = [0; LENGTH_BYTES];

/// Why bytes from a peer were refused. Each closes the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("not a yggr connection (bad handshake magic)")]
    BadMagic,
    #[error("a TLS handshake, but this node is not configured for TLS")]
    UnexpectedTls,
    #[error(
        "protocol version {0}; this node speaks versions {PROTOCOL_VERSION_WITHOUT_IDENTITY} and {PROTOCOL_VERSION}"
    )]
    Version(u32),
    #[error("handshake names node id 0")]
    ZeroNodeId,
    #[error("frame of {length} bytes exceeds the limit of {limit}")]
    Oversized { length: usize, limit: usize },
    #[error("frame does not decode: {0}")]
    Decode(#[from] WireError),
}

/// What a handshake says. Zero in an identity field means unknown (and all three are zero
/// in a version 1 handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Handshake {
    pub(crate) sender: NodeId,
    /// The sender's cluster id.
    pub(crate) cluster_id: u64,
    /// The incarnation of the sender's storage.
    pub(crate) incarnation: u64,
    /// The incarnation the sender last accepted from the receiver.
    pub(crate) receiver_incarnation: u64,
}

/// How much of a handshake remains to read after its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// A version 1 handshake: complete.
    WithoutIdentity(NodeId),
    /// A version 2 handshake: [`HANDSHAKE_IDENTITY_BYTES`] more to read.
    WithIdentity(NodeId),
}

pub(crate) fn encode_handshake(handshake: &Handshake) -> [u8; HANDSHAKE_BYTES] {
    let mut bytes = [0; HANDSHAKE_BYTES];
    bytes[..8].copy_from_slice(HANDSHAKE_MAGIC);
    bytes[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    bytes[12..20].copy_from_slice(&handshake.sender.get().to_le_bytes());
    bytes[20..28].copy_from_slice(&handshake.cluster_id.to_le_bytes());
    bytes[28..36].copy_from_slice(&handshake.incarnation.to_le_bytes());
    bytes[36..44].copy_from_slice(&handshake.receiver_incarnation.to_le_bytes());
    bytes
}

fn u64_le(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes.try_into().expect("8 bytes"))
}

/// The sender a complete handshake prefix names, and whether identities follow.
pub(crate) fn decode_handshake_prefix(
    bytes: &[u8; HANDSHAKE_PREFIX_BYTES],
) -> Result<Prefix, FrameError> {
    if &bytes[..8] != HANDSHAKE_MAGIC {
        if bytes[0] == TLS_HANDSHAKE_RECORD {
            return Err(FrameError::UnexpectedTls);
        }
        return Err(FrameError::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != PROTOCOL_VERSION && version != PROTOCOL_VERSION_WITHOUT_IDENTITY {
        return Err(FrameError::Version(version));
    }
    let sender = NodeId::new(u64_le(&bytes[12..20])).ok_or(FrameError::ZeroNodeId)?;
    Ok(if version == PROTOCOL_VERSION {
        Prefix::WithIdentity(sender)
    } else {
        Prefix::WithoutIdentity(sender)
    })
}

/// The handshake of `sender` whose identity bytes (after the prefix) are `bytes`; `None` for
/// a version 1 handshake, which has none.
pub(crate) fn handshake_with(
    sender: NodeId,
    bytes: Option<&[u8; HANDSHAKE_IDENTITY_BYTES]>,
) -> Handshake {
    let field = |at: usize| bytes.map_or(0, |bytes| u64_le(&bytes[at..at + 8]));
    Handshake {
        sender,
        cluster_id: field(0),
        incarnation: field(8),
        receiver_incarnation: field(16),
    }
}

/// Decodes a whole handshake held in `bytes` (version 1 or 2), or `Ok(None)` when `bytes`
/// is too short to hold it. The reader reads the prefix and the rest separately; this is the
/// same rule in one place, for tests.
#[cfg(test)]
pub(crate) fn decode_handshake(bytes: &[u8]) -> Result<Option<Handshake>, FrameError> {
    let Some(prefix) = bytes.first_chunk::<HANDSHAKE_PREFIX_BYTES>() else {
        return Ok(None);
    };
    match decode_handshake_prefix(prefix)? {
        Prefix::WithoutIdentity(sender) => Ok(Some(handshake_with(sender, None))),
        Prefix::WithIdentity(sender) => Ok(bytes[HANDSHAKE_PREFIX_BYTES..]
            .first_chunk::<HANDSHAKE_IDENTITY_BYTES>()
            .map(|identity| handshake_with(sender, Some(identity)))),
    }
}

fn put_frame(payload: &[u8], out: &mut BytesMut) {
    // An Envelope names its sender, so it never encodes to nothing: a frame of length zero
    // would be read as a keep-alive and the message lost.
    assert!(!payload.is_empty(), "an encoded message is never empty");
    out.reserve(LENGTH_BYTES + payload.len());
    out.put_u32_le(payload.len() as u32);
    out.put_slice(payload);
}

/// Appends `message` to `out` as frames of at most `limit` bytes each (the receiver refuses
/// larger ones): an AppendEntries too large for one frame goes as several, each carrying
/// the entries after the one before it, which a follower takes exactly as it would the one
/// message. Returns how many frames were written, or, for a message that cannot be cut
/// small enough (one entry, or a snapshot chunk, above the limit), the size of the smallest
/// piece that did not fit; `out` is then left as it was.
pub(crate) fn encode_frames(
    message: &Message<Bytes>,
    limit: usize,
    out: &mut BytesMut,
) -> Result<usize, usize> {
    let start = out.len();
    let result = encode_frames_within(message, limit, out);
    if result.is_err() {
        out.truncate(start);
    }
    result
}

fn encode_frames_within(
    message: &Message<Bytes>,
    limit: usize,
    out: &mut BytesMut,
) -> Result<usize, usize> {
    let payload = encode_message(message, |command: &Bytes| command.to_vec());
    if payload.len() <= limit {
        put_frame(&payload, out);
        return Ok(1);
    }
    let Rpc::AppendEntries(append) = &message.rpc else {
        return Err(payload.len());
    };
    if append.entries.len() < 2 {
        return Err(payload.len());
    }
    let (front, back) = append.entries.split_at(append.entries.len() / 2);
    let last_front = front
        .last()
        .expect("split_at of two or more leaves both halves");
    let first = AppendEntries {
        prev_log_index: append.prev_log_index,
        prev_log_term: append.prev_log_term,
        entries: front.to_vec(),
        leader_commit: append.leader_commit,
        round: append.round,
    };
    let second = AppendEntries {
        prev_log_index: last_front.index,
        prev_log_term: last_front.term,
        entries: back.to_vec(),
        leader_commit: append.leader_commit,
        round: append.round,
    };
    let piece = |body| Message {
        from: message.from,
        term: message.term,
        rpc: Rpc::AppendEntries(body),
    };
    Ok(encode_frames_within(&piece(first), limit, out)?
        + encode_frames_within(&piece(second), limit, out)?)
}

/// Takes one whole frame off the front of `buffer` and decodes it, skipping keep-alives;
/// `Ok(None)` when the buffer does not hold a whole message frame yet.
pub(crate) fn decode_frame(
    buffer: &mut BytesMut,
    limit: usize,
) -> Result<Option<Message<Bytes>>, FrameError> {
    while buffer.starts_with(&KEEP_ALIVE) {
        buffer.advance(LENGTH_BYTES);
    }
    if buffer.len() < LENGTH_BYTES {
        return Ok(None);
    }
    let length = u32::from_le_bytes(buffer[..LENGTH_BYTES].try_into().expect("4 bytes")) as usize;
    if length > limit {
        return Err(FrameError::Oversized { length, limit });
    }
    if buffer.len() < LENGTH_BYTES + length {
        buffer.reserve(LENGTH_BYTES + length - buffer.len());
        return Ok(None);
    }
    buffer.advance(LENGTH_BYTES);
    // The commands stay slices of the frame: no copy on the way in.
    let message = decode_message_bytes(buffer.split_to(length).freeze())?;
    Ok(Some(message))
}

#[cfg(test)]
mod tests {
    use yggr_core::{EntryPayload, LogEntry, LogIndex, Term, VoteResponse};

    use super::*;

    fn encode_frame(message: &Message<Bytes>, out: &mut BytesMut) {
        assert_eq!(encode_frames(message, usize::MAX, out), Ok(1));
    }

    fn append(entries: u64, bytes_each: usize) -> Message<Bytes> {
        Message {
            from: id(1),
            term: Term::new(3),
            rpc: Rpc::AppendEntries(AppendEntries {
                prev_log_index: LogIndex::new(10),
                prev_log_term: Term::new(2),
                entries: (11..11 + entries)
                    .map(|index| LogEntry {
                        index: LogIndex::new(index),
                        term: Term::new(3),
                        payload: EntryPayload::Command(Bytes::from(vec![index as u8; bytes_each])),
                    })
                    .collect(),
                leader_commit: LogIndex::new(12),
                round: 9,
            }),
        }
    }

    fn decode_all(mut encoded: BytesMut, limit: usize) -> Vec<AppendEntries<Bytes>> {
        let mut pieces = Vec::new();
        while let Some(message) = decode_frame(&mut encoded, limit).unwrap() {
            let Rpc::AppendEntries(body) = message.rpc else {
                panic!("not an AppendEntries: {message:?}");
            };
            pieces.push(body);
        }
        pieces
    }

    /// The receiver refuses a frame above its limit and closes the connection, so an
    /// AppendEntries too large for one frame must go as several that chain: each starts
    /// where the previous one ended, and together they carry every entry once, in order.
    #[test]
    fn an_append_above_the_frame_limit_goes_as_chained_frames_within_it() {
        let limit = 1000;
        let message = append(7, 300);
        let mut encoded = BytesMut::new();
        let frames = encode_frames(&message, limit, &mut encoded).unwrap();
        assert!(frames > 1);
        let pieces = decode_all(encoded, limit);
        assert_eq!(pieces.len(), frames);
        let mut prev = (LogIndex::new(10), Term::new(2));
        let mut carried = Vec::new();
        for piece in &pieces {
            assert_eq!((piece.prev_log_index, piece.prev_log_term), prev);
            assert_eq!((piece.leader_commit, piece.round), (LogIndex::new(12), 9));
            let last = piece.entries.last().unwrap();
            prev = (last.index, last.term);
            carried.extend(piece.entries.iter().cloned());
        }
        let Rpc::AppendEntries(original) = message.rpc else {
            unreachable!()
        };
        assert_eq!(carried, original.entries);
    }

    #[test]
    fn a_message_that_cannot_be_cut_below_the_limit_is_refused_and_writes_nothing() {
        let mut encoded = BytesMut::from(&b"kept"[..]);
        // One entry alone above the limit, even after splitting the rest off.
        assert!(encode_frames(&append(3, 2000), 1000, &mut encoded).is_err());
        assert_eq!(&encoded[..], b"kept");
        let vote = message();
        assert!(encode_frames(&vote, 2, &mut encoded).is_err());
        assert_eq!(&encoded[..], b"kept");
    }

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    fn message() -> Message<Bytes> {
        Message {
            from: id(2),
            term: Term::new(5),
            rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }),
        }
    }

    #[test]
    fn frames_round_trip_and_partial_ones_wait_for_more() {
        let mut encoded = BytesMut::new();
        encode_frame(&message(), &mut encoded);
        encode_frame(&message(), &mut encoded);
        let whole = encoded.clone();
        for cut in 0..whole.len() / 2 {
            let mut partial = BytesMut::from(&whole[..cut]);
            assert!(decode_frame(&mut partial, 1024).unwrap().is_none());
        }
        assert_eq!(decode_frame(&mut encoded, 1024).unwrap(), Some(message()));
        assert_eq!(decode_frame(&mut encoded, 1024).unwrap(), Some(message()));
        assert!(encoded.is_empty());
    }

    /// A keep-alive carries no message: the reader takes it off the buffer, wherever it
    /// falls between messages, and hands on only the messages.
    #[test]
    fn keep_alives_between_frames_are_consumed_and_deliver_nothing() {
        let mut encoded = BytesMut::new();
        encoded.put_slice(&KEEP_ALIVE);
        encode_frame(&message(), &mut encoded);
        encoded.put_slice(&KEEP_ALIVE);
        encoded.put_slice(&KEEP_ALIVE);
        encode_frame(&message(), &mut encoded);
        encoded.put_slice(&KEEP_ALIVE);
        assert_eq!(decode_frame(&mut encoded, 1024).unwrap(), Some(message()));
        assert_eq!(decode_frame(&mut encoded, 1024).unwrap(), Some(message()));
        assert_eq!(decode_frame(&mut encoded, 1024).unwrap(), None);
        assert!(encoded.is_empty(), "the trailing keep-alive was consumed");
        // A keep-alive cut short is left for the next read.
        let mut partial = BytesMut::from(&KEEP_ALIVE[..2]);
        assert_eq!(decode_frame(&mut partial, 1024).unwrap(), None);
        assert_eq!(partial.len(), 2);
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let mut buffer = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
        assert!(matches!(
            decode_frame(&mut buffer, 1 << 20),
            Err(FrameError::Oversized { .. })
        ));
    }

    #[test]
    fn garbage_frames_are_decode_errors_not_panics() {
        for garbage in [&[0xff; 12][..], &[1, 2, 3, 4, 5, 6, 7, 8][..]] {
            let mut buffer = BytesMut::new();
            buffer.put_u32_le(garbage.len() as u32);
            buffer.put_slice(garbage);
            assert!(decode_frame(&mut buffer, 1024).is_err());
        }
    }

    fn handshake(sender: u64) -> Handshake {
        Handshake {
            sender: id(sender),
            cluster_id: 0x1111,
            incarnation: 0x2222,
            receiver_incarnation: 0x3333,
        }
    }

    #[test]
    fn a_version_2_handshake_round_trips_with_its_identities() {
        let bytes = encode_handshake(&handshake(7));
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        assert_eq!(decode_handshake(&bytes).unwrap(), Some(handshake(7)));
        // Short of its identities, it is not whole yet.
        assert_eq!(
            decode_handshake(&bytes[..HANDSHAKE_BYTES - 1]).unwrap(),
            None
        );
    }

    #[test]
    fn a_version_1_handshake_is_accepted_with_every_identity_unknown() {
        let mut bytes = b"YGGRNET1".to_vec();
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(&7u64.to_le_bytes());
        let decoded = decode_handshake(&bytes).unwrap().unwrap();
        assert_eq!(
            (decoded.sender, decoded.cluster_id, decoded.incarnation),
            (id(7), 0, 0)
        );
        assert_eq!(decoded.receiver_incarnation, 0);
    }

    #[test]
    fn handshakes_of_other_versions_bad_magic_or_node_id_0_are_refused() {
        let mut other = encode_handshake(&handshake(7));
        other[8] = 9;
        assert!(matches!(
            decode_handshake(&other),
            Err(FrameError::Version(9))
        ));
        assert!(matches!(
            decode_handshake(&[0; HANDSHAKE_BYTES]),
            Err(FrameError::BadMagic)
        ));
        let mut zero = encode_handshake(&handshake(7));
        zero[12..20].copy_from_slice(&[0; 8]);
        assert!(matches!(
            decode_handshake(&zero),
            Err(FrameError::ZeroNodeId)
        ));
        for garbage in [[0xff; HANDSHAKE_BYTES], [b'Y'; HANDSHAKE_BYTES]] {
            assert!(decode_handshake(&garbage).is_err());
        }
    }
}
