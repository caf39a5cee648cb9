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
//! ```
//!
//! A length above the frame limit is refused before anything is allocated for it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use yggr_core::wire::{WireError, decode_message_bytes, encode_message};
use yggr_core::{Message, NodeId};

const HANDSHAKE_MAGIC: &[u8; 8] = b"YGGRNET1";
/// The protocol version this build speaks.
pub(crate) const PROTOCOL_VERSION: u32 = 1;
/// The handshake's length.
pub(crate) const HANDSHAKE_BYTES: usize = 8 + 4 + 8;
const LENGTH_BYTES: usize = 4;

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

/// Appends the frame of `message` to `out`.
pub(crate) fn encode_frame(message: &Message<Bytes>, out: &mut BytesMut) {
    let payload = encode_message(message, |command: &Bytes| command.to_vec());
    out.reserve(LENGTH_BYTES + payload.len());
    out.put_u32_le(payload.len() as u32);
    out.put_slice(&payload);
}

/// Takes one whole frame off the front of `buffer` and decodes it; `Ok(None)` when the
/// buffer does not hold a whole frame yet.
pub(crate) fn decode_frame(
    buffer: &mut BytesMut,
    limit: usize,
) -> Result<Option<Message<Bytes>>, FrameError> {
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
    use yggr_core::{Rpc, Term, VoteResponse};

    use super::*;

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
