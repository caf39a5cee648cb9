//! The byte layouts of every file [`DiskStorage`](super::DiskStorage) writes, and their
//! checked decoding. All integers are little-endian and explicitly sized; every file and every
//! log record ends its covered bytes with a CRC-32C, so a flipped bit anywhere is detected.
//!
//! ```text
//! meta (written once, at bootstrap)
//! ┌────────────┬─────────┬──────────┬───────────────────────┬────────┐
//! │ "YGGRMETA" │ version │ len (n)  │ founding membership   │ crc32c │
//! │ 8 bytes    │ u32     │ u32      │ n bytes (protobuf)    │ u32    │
//! └────────────┴─────────┴──────────┴───────────────────────┴────────┘
//!
//! hard_state (replaced atomically)
//! ┌────────────┬──────────────┬─────────────────────────┬────────┐
//! │ "YGGRHARD" │ current term │ voted for (0 = nobody)  │ crc32c │
//! │ 8 bytes    │ u64          │ u64                     │ u32    │
//! └────────────┴──────────────┴─────────────────────────┴────────┘
//!
//! snapshot (replaced atomically)
//! ┌────────────┬────────────┬───────────┬─────────┬────────────┬──────────┬──────────┬────────┐
//! │ "YGGRSNAP" │ last index │ last term │ len (m) │ membership │ len (d)  │ data     │ crc32c │
//! │ 8 bytes    │ u64        │ u64       │ u32     │ m bytes    │ u64      │ d bytes  │ u32    │
//! └────────────┴────────────┴───────────┴─────────┴────────────┴──────────┴──────────┴────────┘
//!
//! log/<first index, 20 digits>.seg (append-only)
//! ┌────────────┬─────────────┬────────┐
//! │ "YGGRSEG1" │ first index │ crc32c │   segment header (20 bytes), then batches
//! │ 8 bytes    │ u64         │ u32    │
//! └────────────┴─────────────┴────────┘
//!
//! one batch per append (everything one fsync made durable)
//! ┌────────┬──────────┬────────┬──────────────────────────────────────────┐
//! │ "YBAT" │ len (b)  │ crc32c │ records, b bytes                         │
//! │ 4 bytes│ u32      │ u32    │                                          │
//! └────────┴──────────┴────────┴──────────────────────────────────────────┘
//!   the batch checksum covers its magic, length and records
//!
//! one record per entry
//! ┌──────────┬────────┬───────────────┐
//! │ len (p)  │ crc32c │ entry         │   the record checksum covers the length and the
//! │ u32      │ u32    │ p bytes       │   entry, so a corrupt length is caught
//! └──────────┴────────┴───────────────┘
//! ```
//!
//! Only the last batch of the last segment can be torn by a crash: each append is synced
//! before the next one is written. So a batch that does not check out is torn when no valid
//! batch follows it, and corruption when one does.
//!
//! An entry is the protobuf `Entry` of the wire format (`yggr_core::wire::encode_entry`),
//! the same bytes AppendEntries carries.

use bytes::Bytes;
use yggr_core::wire::{decode_entry_bytes, decode_membership, encode_entry, encode_membership};
use yggr_core::{LogEntry, LogIndex, Membership, NodeId, RecoveredSnapshot, Term};

/// The version this code writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 1;

pub(crate) const META_MAGIC: &[u8; 8] = b"YGGRMETA";
pub(crate) const HARD_STATE_MAGIC: &[u8; 8] = b"YGGRHARD";
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"YGGRSNAP";
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"YGGRSEG1";

const MAGIC_BYTES: usize = 8;
const CRC_BYTES: usize = 4;
/// Magic, version and membership length.
const META_FIXED_BYTES: usize = MAGIC_BYTES + 4 + 4;
/// Magic, term and vote, then the checksum.
pub(crate) const HARD_STATE_BYTES: usize = MAGIC_BYTES + 8 + 8 + CRC_BYTES;
/// Magic and first index, then the checksum.
pub(crate) const SEGMENT_HEADER_BYTES: usize = MAGIC_BYTES + 8 + CRC_BYTES;
/// A record's length and checksum.
pub(crate) const RECORD_HEADER_BYTES: usize = 4 + CRC_BYTES;
pub(crate) const BATCH_MAGIC: &[u8; 4] = b"YBAT";
/// A batch's magic, length and checksum.
pub(crate) const BATCH_HEADER_BYTES: usize = 4 + 4 + CRC_BYTES;

/// The largest entry a record may hold. A length read from disk above it is corruption, and
/// no allocation is ever sized by an unchecked length.
pub(crate) const MAX_RECORD_BYTES: usize = 256 << 20;
/// The largest configuration a meta or snapshot file may hold.
const MAX_MEMBERSHIP_BYTES: usize = 16 << 20;

const _: () = assert!(MAX_RECORD_BYTES <= u32::MAX as usize);

/// Why a file's bytes were refused, with the offset of the first bad byte in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FormatError {
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

fn refused<T>(offset: usize, reason: impl Into<String>) -> Result<T, FormatError> {
    Err(FormatError {
        offset: offset as u64,
        reason: reason.into(),
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0; 4];
    raw.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(raw)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// Checks the magic at the start and the checksum over everything before the last four bytes.
fn check_framing(bytes: &[u8], magic: &[u8; 8], what: &str) -> Result<(), FormatError> {
    if bytes.len() < MAGIC_BYTES + CRC_BYTES {
        return refused(
            0,
            format!("{what} file is truncated ({} bytes)", bytes.len()),
        );
    }
    if &bytes[..MAGIC_BYTES] != magic {
        return refused(0, format!("not a {what} file (bad magic)"));
    }
    let covered = bytes.len() - CRC_BYTES;
    if crc32c::crc32c(&bytes[..covered]) != u32_at(bytes, covered) {
        return refused(covered, format!("{what} file checksum mismatch"));
    }
    Ok(())
}

fn with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// The meta file: the format version and the founding configuration.
pub(crate) fn encode_meta(founding: &Membership) -> Vec<u8> {
    let membership = encode_membership(founding);
    let mut bytes = Vec::with_capacity(META_FIXED_BYTES + membership.len() + CRC_BYTES);
    bytes.extend_from_slice(META_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&membership);
    with_crc(bytes)
}

pub(crate) fn decode_meta(bytes: &[u8]) -> Result<Membership, FormatError> {
    check_framing(bytes, META_MAGIC, "meta")?;
    if bytes.len() < META_FIXED_BYTES + CRC_BYTES {
        return refused(0, "meta file is truncated");
    }
    let version = u32_at(bytes, MAGIC_BYTES);
    if version != FORMAT_VERSION {
        return refused(
            MAGIC_BYTES,
            format!("format version {version}; this build reads version {FORMAT_VERSION}"),
        );
    }
    let length = u32_at(bytes, MAGIC_BYTES + 4) as usize;
    if length > MAX_MEMBERSHIP_BYTES || META_FIXED_BYTES + length + CRC_BYTES != bytes.len() {
        return refused(
            MAGIC_BYTES + 4,
            "meta file length does not match its contents",
        );
    }
    decode_membership(&bytes[META_FIXED_BYTES..META_FIXED_BYTES + length])
        .or_else(|error| refused(META_FIXED_BYTES, format!("founding configuration: {error}")))
}

pub(crate) fn encode_hard_state(current_term: Term, voted_for: Option<NodeId>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HARD_STATE_BYTES);
    bytes.extend_from_slice(HARD_STATE_MAGIC);
    bytes.extend_from_slice(&current_term.get().to_le_bytes());
    bytes.extend_from_slice(&voted_for.map_or(0, NodeId::get).to_le_bytes());
    with_crc(bytes)
}

pub(crate) fn decode_hard_state(bytes: &[u8]) -> Result<(Term, Option<NodeId>), FormatError> {
    if bytes.len() != HARD_STATE_BYTES {
        return refused(
            0,
            format!(
                "hard state file holds {} bytes, not {HARD_STATE_BYTES}",
                bytes.len()
            ),
        );
    }
    check_framing(bytes, HARD_STATE_MAGIC, "hard state")?;
    let term = Term::new(u64_at(bytes, MAGIC_BYTES));
    let voted_for = NodeId::new(u64_at(bytes, MAGIC_BYTES + 8));
    Ok((term, voted_for))
}

pub(crate) fn encode_snapshot(snapshot: &RecoveredSnapshot) -> Vec<u8> {
    let membership = encode_membership(&snapshot.membership);
    let mut bytes =
        Vec::with_capacity(MAGIC_BYTES + 28 + membership.len() + snapshot.bytes.len() + CRC_BYTES);
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&snapshot.last_included_index.get().to_le_bytes());
    bytes.extend_from_slice(&snapshot.last_included_term.get().to_le_bytes());
    bytes.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&membership);
    bytes.extend_from_slice(&(snapshot.bytes.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&snapshot.bytes);
    with_crc(bytes)
}

pub(crate) fn decode_snapshot(bytes: &[u8]) -> Result<RecoveredSnapshot, FormatError> {
    check_framing(bytes, SNAPSHOT_MAGIC, "snapshot")?;
    let fixed = MAGIC_BYTES + 8 + 8 + 4;
    if bytes.len() < fixed + CRC_BYTES {
        return refused(0, "snapshot file is truncated");
    }
    let index = u64_at(bytes, MAGIC_BYTES);
    let term = u64_at(bytes, MAGIC_BYTES + 8);
    let membership_length = u32_at(bytes, MAGIC_BYTES + 16) as usize;
    let data_at = fixed + membership_length + 8;
    if membership_length > MAX_MEMBERSHIP_BYTES || data_at + CRC_BYTES > bytes.len() {
        return refused(
            MAGIC_BYTES + 16,
            "snapshot configuration length out of range",
        );
    }
    let membership = decode_membership(&bytes[fixed..fixed + membership_length])
        .or_else(|error| refused(fixed, format!("snapshot configuration: {error}")))?;
    let data_length = u64_at(bytes, data_at - 8);
    if data_length != (bytes.len() - CRC_BYTES - data_at) as u64 {
        return refused(data_at - 8, "snapshot data length does not match the file");
    }
    if index == 0 {
        return refused(MAGIC_BYTES, "snapshot at index 0");
    }
    Ok(RecoveredSnapshot {
        last_included_index: LogIndex::new(index),
        last_included_term: Term::new(term),
        membership,
        bytes: Bytes::copy_from_slice(&bytes[data_at..bytes.len() - CRC_BYTES]),
    })
}

pub(crate) fn encode_segment_header(first: LogIndex) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    header[..MAGIC_BYTES].copy_from_slice(SEGMENT_MAGIC);
    header[MAGIC_BYTES..MAGIC_BYTES + 8].copy_from_slice(&first.get().to_le_bytes());
    let crc = crc32c::crc32c(&header[..MAGIC_BYTES + 8]);
    header[MAGIC_BYTES + 8..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The first index a segment header names.
pub(crate) fn decode_segment_header(bytes: &[u8]) -> Result<LogIndex, FormatError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return refused(0, "segment header is truncated");
    }
    check_framing(&bytes[..SEGMENT_HEADER_BYTES], SEGMENT_MAGIC, "segment")?;
    Ok(LogIndex::new(u64_at(bytes, MAGIC_BYTES)))
}

/// Starts a batch at the end of `out`; returns where its header is, for [`finish_batch`].
pub(crate) fn start_batch(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(BATCH_MAGIC);
    out.extend_from_slice(&[0; 4 + CRC_BYTES]);
    start
}

/// Fills in the length and checksum of the batch started at `start`, whose records are
/// everything after its header.
pub(crate) fn finish_batch(out: &mut [u8], start: usize) {
    let length = (out.len() - start - BATCH_HEADER_BYTES) as u32;
    out[start + 4..start + 8].copy_from_slice(&length.to_le_bytes());
    let crc = batch_crc(&out[start..start + 8], &out[start + BATCH_HEADER_BYTES..]);
    out[start + 8..start + BATCH_HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
}

/// The header of a batch holding `records`.
pub(crate) fn batch_header(records: &[u8]) -> [u8; BATCH_HEADER_BYTES] {
    let mut header = [0; BATCH_HEADER_BYTES];
    header[..4].copy_from_slice(BATCH_MAGIC);
    header[4..8].copy_from_slice(&(records.len() as u32).to_le_bytes());
    let crc = batch_crc(&header[..8], records);
    header[8..].copy_from_slice(&crc.to_le_bytes());
    header
}

fn batch_crc(magic_and_length: &[u8], records: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(magic_and_length), records)
}

/// The length of the records of the whole, checksummed batch at the start of `bytes`, or
/// `None` when there is none there.
pub(crate) fn valid_batch(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < BATCH_HEADER_BYTES || &bytes[..4] != BATCH_MAGIC {
        return None;
    }
    let length = u32_at(bytes, 4) as usize;
    let end = BATCH_HEADER_BYTES.checked_add(length)?;
    if length == 0 || end > bytes.len() {
        return None;
    }
    (batch_crc(&bytes[..8], &bytes[BATCH_HEADER_BYTES..end]) == u32_at(bytes, 8)).then_some(length)
}

/// Whether a valid batch starts anywhere in `bytes`.
pub(crate) fn any_valid_batch(bytes: &[u8]) -> bool {
    bytes
        .windows(4)
        .enumerate()
        .any(|(at, window)| window == BATCH_MAGIC && valid_batch(&bytes[at..]).is_some())
}

/// Appends the record of `entry` to `out`.
pub(crate) fn encode_record(entry: &LogEntry<Bytes>, out: &mut Vec<u8>) {
    let payload = encode_entry(entry, |command: &Bytes| command.to_vec());
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; CRC_BYTES]);
    out.extend_from_slice(&payload);
    let mut crc = crc32c::crc32c(&out[start..start + 4]);
    crc = crc32c::crc32c_append(crc, &payload);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// What the bytes at one record position hold.
#[derive(Debug)]
pub(crate) enum Record {
    /// A whole, checksummed entry, and the record's length on disk.
    Entry(LogEntry<Bytes>, usize),
    /// The bytes end before the record does: what a crash in the middle of an append leaves.
    Incomplete,
    /// A record whose length or checksum is wrong.
    Bad(String),
}

/// Reads the record at the start of `bytes`. The entry's command is a slice of `bytes`, not
/// a copy.
pub(crate) fn decode_record(bytes: &Bytes) -> Record {
    if bytes.len() < RECORD_HEADER_BYTES {
        return Record::Incomplete;
    }
    let length = u32_at(bytes, 0) as usize;
    if length == 0 || length > MAX_RECORD_BYTES {
        return Record::Bad(format!("record length {length} out of range"));
    }
    let end = RECORD_HEADER_BYTES + length;
    if end > bytes.len() {
        return Record::Incomplete;
    }
    let mut crc = crc32c::crc32c(&bytes[..4]);
    crc = crc32c::crc32c_append(crc, &bytes[RECORD_HEADER_BYTES..end]);
    if crc != u32_at(bytes, 4) {
        return Record::Bad("record checksum mismatch".to_string());
    }
    match decode_entry_bytes(bytes.slice(RECORD_HEADER_BYTES..end)) {
        Ok(entry) => Record::Entry(entry, end),
        Err(error) => Record::Bad(format!("record does not decode: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yggr_core::EntryPayload;

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    fn entry(index: u64, term: u64, command: &[u8]) -> LogEntry<Bytes> {
        LogEntry {
            index: LogIndex::new(index),
            term: Term::new(term),
            payload: EntryPayload::Command(Bytes::copy_from_slice(command)),
        }
    }

    #[test]
    fn every_file_round_trips() {
        let membership = Membership {
            voters: [id(1), id(2)].into(),
            learners: [id(3)].into(),
        };
        assert_eq!(decode_meta(&encode_meta(&membership)).unwrap(), membership);
        let hard = encode_hard_state(Term::new(7), Some(id(2)));
        assert_eq!(
            decode_hard_state(&hard).unwrap(),
            (Term::new(7), Some(id(2)))
        );
        let snapshot = RecoveredSnapshot {
            last_included_index: LogIndex::new(9),
            last_included_term: Term::new(3),
            membership,
            bytes: Bytes::from_static(b"state"),
        };
        assert_eq!(
            decode_snapshot(&encode_snapshot(&snapshot)).unwrap(),
            snapshot
        );
        let header = encode_segment_header(LogIndex::new(42));
        assert_eq!(decode_segment_header(&header).unwrap(), LogIndex::new(42));
        let mut bytes = Vec::new();
        encode_record(&entry(5, 2, b"abc"), &mut bytes);
        match decode_record(&Bytes::from(bytes.clone())) {
            Record::Entry(decoded, length) => {
                assert_eq!(decoded, entry(5, 2, b"abc"));
                assert_eq!(length, bytes.len());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn any_flipped_bit_in_a_file_is_refused() {
        let membership = Membership::from_voters([id(1)]);
        let files = [
            encode_meta(&membership),
            encode_hard_state(Term::new(4), None),
            encode_snapshot(&RecoveredSnapshot {
                last_included_index: LogIndex::new(1),
                last_included_term: Term::new(1),
                membership,
                bytes: Bytes::from_static(b"xyz"),
            }),
        ];
        for (which, file) in files.iter().enumerate() {
            for byte in 0..file.len() {
                for bit in 0..8 {
                    let mut broken = file.clone();
                    broken[byte] ^= 1 << bit;
                    let refused = match which {
                        0 => decode_meta(&broken).is_err(),
                        1 => decode_hard_state(&broken).is_err(),
                        _ => decode_snapshot(&broken).is_err(),
                    };
                    assert!(
                        refused,
                        "file {which}, byte {byte}, bit {bit} went unnoticed"
                    );
                }
            }
        }
    }

    #[test]
    fn a_flipped_bit_in_a_record_or_its_length_is_bad_and_a_short_one_incomplete() {
        let mut bytes = Vec::new();
        encode_record(&entry(1, 1, b"hello"), &mut bytes);
        for byte in 0..bytes.len() {
            let mut broken = bytes.clone();
            broken[byte] ^= 0x10;
            assert!(
                !matches!(decode_record(&Bytes::from(broken)), Record::Entry(..)),
                "byte {byte} went unnoticed"
            );
        }
        for cut in 0..bytes.len() {
            assert!(matches!(
                decode_record(&Bytes::copy_from_slice(&bytes[..cut])),
                Record::Incomplete
            ));
        }
        // A huge length is refused before anything is allocated for it.
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_record(&Bytes::from(huge)), Record::Bad(_)));
    }

    #[test]
    fn a_batch_checks_out_whole_or_not_at_all() {
        let mut bytes = Vec::new();
        let start = start_batch(&mut bytes);
        encode_record(&entry(1, 1, b"one"), &mut bytes);
        encode_record(&entry(2, 1, b"two"), &mut bytes);
        finish_batch(&mut bytes, start);
        assert_eq!(valid_batch(&bytes), Some(bytes.len() - BATCH_HEADER_BYTES));
        assert_eq!(
            batch_header(&bytes[BATCH_HEADER_BYTES..])[..],
            bytes[..BATCH_HEADER_BYTES]
        );
        for byte in 0..bytes.len() {
            let mut broken = bytes.clone();
            broken[byte] ^= 0x04;
            assert_eq!(valid_batch(&broken), None, "byte {byte} went unnoticed");
        }
        assert_eq!(valid_batch(&bytes[..bytes.len() - 1]), None);
        let mut after_garbage = vec![0xee; 37];
        after_garbage.extend_from_slice(&bytes);
        assert!(any_valid_batch(&after_garbage));
        assert!(!any_valid_batch(&after_garbage[..after_garbage.len() - 1]));
    }

    #[test]
    fn truncated_and_garbage_files_are_refused() {
        let hard = encode_hard_state(Term::new(1), None);
        assert!(decode_hard_state(&hard[..hard.len() - 1]).is_err());
        assert!(decode_hard_state(b"").is_err());
        assert!(decode_meta(b"garbage garbage garbage").is_err());
        let meta = encode_meta(&Membership::default());
        assert!(decode_meta(&meta[..meta.len() - 2]).is_err());
        assert!(decode_snapshot(&[0; 64]).is_err());
    }
}
