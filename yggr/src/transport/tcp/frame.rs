//! The bytes on a TCP connection between two nodes, parsed without doing any I/O.
//!
//! ```text
//! handshake, once, from the connecting side
//! ┌────────────┬──────────────────┬────────────────┐
//! │ "YGGRNET1" │ protocol version │ sender node id │
//! │ 8 bytes    │ u32 LE           │ u64 LE         │
//! └────────────┴──────────────────┴────────────────┘
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
//! (0.1.0 is the first), so the version was not bumped.
//! The connection is one-way: the accepting side never writes on it, so a writer that finds
//! anything to read has found the connection closed.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use yggr_core::wire::{WireError, decode_message_bytes, encode_message};
use yggr_core::{AppendEntries, Message, NodeId, Rpc};

const HANDSHAKE_MAGIC: &[u8; 8] = b"YGGRNET1";
/// The protocol version this build speaks.
pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// The handshake's length.
pub(crate) const HANDSHAKE_BYTES: usize = 8 + 4 + 8;
const LENGTH_BYTES: usize = 4;

/// A keep-alive: a frame of length zero.
pub(crate) const KEEP_ALIVE: [u8; LENGTH_BYTES] = [0; LENGTH_BYTES];

/// Why bytes from a peer were refused. Each closes the connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("not a yggr connection (bad handshake magic)")]
    BadMagic,
    #[error("protocol version {0}; this node speaks version {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("handshake names node id 0")]
    ZeroNodeId,
    #[error("frame of {length} bytes exceeds the limit of {limit}")]
    Oversized { length: usize, limit: usize },
    #[error("frame does not decode: {0}")]
    Decode(#[from] WireError),
}

pub(crate) fn encode_handshake(node: NodeId) -> [u8; HANDSHAKE_BYTES] {
    let mut bytes = [0; HANDSHAKE_BYTES];
    bytes[..8].copy_from_slice(HANDSHAKE_MAGIC);
    bytes[8..12].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    bytes[12..].copy_from_slice(&node.get().to_le_bytes());
    bytes
}

/// The sender a complete handshake names.
pub(crate) fn decode_handshake(bytes: &[u8; HANDSHAKE_BYTES]) -> Result<NodeId, FrameError> {
    if &bytes[..8] != HANDSHAKE_MAGIC {
        return Err(FrameError::BadMagic);
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != PROTOCOL_VERSION {
        return Err(FrameError::Version(version));
    }
    let raw = u64::from_le_bytes(bytes[12..].try_into().expect("8 bytes"));
    NodeId::new(raw).ok_or(FrameError::ZeroNodeId)
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

    #[test]
    fn handshakes_name_the_sender_and_refuse_other_versions() {
        assert_eq!(decode_handshake(&encode_handshake(id(7))).unwrap(), id(7));
        let mut other = encode_handshake(id(7));
        other[8] = 9;
        assert!(matches!(
            decode_handshake(&other),
            Err(FrameError::Version(_))
        ));
        assert!(matches!(
            decode_handshake(&[0; HANDSHAKE_BYTES]),
            Err(FrameError::BadMagic)
        ));
    }
}
