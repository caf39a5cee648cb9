//! The byte layouts of every file [`DiskStorage`](super::DiskStorage) writes, and their
//! checked decoding. All integers are little-endian and explicitly sized; every file and every
//! log record ends its covered bytes with a CRC-32C, so a flipped bit anywhere is detected.
//!
//! ```text
//! meta (written once, at bootstrap)
//! ┌────────────┬─────────┬─────────┬─────────────┬──────────┬─────────────────────┬────────┐
//! │ "YGGRMETA" │ version │ node id │ incarnation │ len (n)  │ founding membership │ crc32c │
//! │ 8 bytes    │ u32 (3) │ u64     │ u64, not 0  │ u32      │ n bytes (protobuf)  │ u32    │
//! └────────────┴─────────┴─────────┴─────────────┴──────────┴─────────────────────┴────────┘
//!   version 2 (earlier builds) has no incarnation field and still opens: its incarnation is the
//!   FNV-1a hash of the whole file (never 0), the same at every open, so nothing is rewritten
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
//! ┌────────────┬─────────────┬──────────┬─────────┬────────┐
//! │ "YGGRSEG1" │ first index │ salt     │ zero    │ crc32c │   segment header (32 bytes),
//! │ 8 bytes    │ u64         │ u64      │ 4 bytes │ u32    │   synced before any batch
//! └────────────┴─────────────┴──────────┴─────────┴────────┘
//!
//! one batch per append (everything one fsync made durable), starting at a multiple of 16
//! ┌────────┬──────────┬─────────────┬────────────┬──────────────────────────────────┐
//! │ "YBAT" │ len (b)  │ records crc │ header crc │ records, b bytes                 │
//! │ 4 bytes│ u32      │ u32         │ u32        │                                  │
//! └────────┴──────────┴─────────────┴────────────┴──────────────────────────────────┘
//!   the header crc covers the segment's salt, the batch's offset in the file, and the
//!   twelve header bytes before it; zero padding (up to 15 bytes) separates batches
//!
//! one record per entry
//! ┌──────────┬────────┬───────────────┐
//! │ len (p)  │ crc32c │ entry         │   the record checksum covers the length and the
//! │ u32      │ u32    │ p bytes       │   entry, so a corrupt length is caught
//! └──────────┴────────┴───────────────┘
//! ```
//!
//! Only the last batch of the last segment can be torn by a crash: a segment's header is
//! synced before its first batch is written, and each append is synced before the next one
//! is. A torn batch is short or holds an unwritten (all-zero) sector; [`check_torn_tail`]
//! has the exact rule, and anything else that does not check out is corruption. Four
//! details keep that test sound:
//! - A batch starts at a multiple of 16, so its 16-byte header never straddles a 512-byte
//!   sector: truncation rewrites a header in place, and a disk writes a sector whole or not
//!   at all, so that rewrite cannot tear.
//! - The header checksum covers the batch's offset and the segment's random salt, so a copy
//!   of a batch inside a command's bytes (an application that stores log files, say) is not
//!   taken for a batch that a later append wrote.
//! - The header has its own checksum, so looking for a valid batch after a bad one costs a
//!   16-byte check at each 16-byte boundary, and a record checksum only where a header
//!   checks out: linear in the file's size whatever bytes it holds.
//! - The header's checksum covers the batch's length, so a header that checks out says
//!   where its batch ends even when the records do not check out: any byte past that end
//!   was written by a later append, after this batch was synced.
//!
//! An entry is the protobuf `Entry` of the wire format (`yggr_core::wire::encode_entry`),
//! the same bytes AppendEntries carries.

use bytes::Bytes;
use yggr_core::wire::{decode_entry_bytes, decode_membership, encode_entry, encode_membership};
use yggr_core::{LogEntry, LogIndex, Membership, NodeId, RecoveredSnapshot, Term};

use crate::identity::{fnv1a_64, non_zero};

/// The version this code writes, in `meta`. Version 1 (no node id in `meta`, 20-byte segment
/// headers) was never released; version 2 (no incarnation in `meta`) is still read
/// ([`LEGACY_FORMAT_VERSION`]).
pub(crate) const FORMAT_VERSION: u32 = 3;
/// The earlier version this code still reads: its `meta` has no incarnation, every other file
/// is as in [`FORMAT_VERSION`].
pub(crate) const LEGACY_FORMAT_VERSION: u32 = 2;

pub(crate) const META_MAGIC: &[u8; 8] = b"YGGRMETA";
pub(crate) const HARD_STATE_MAGIC: &[u8; 8] = b"YGGRHARD";
pub(crate) const SNAPSHOT_MAGIC: &[u8; 8] = b"YGGRSNAP";
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"YGGRSEG1";

const MAGIC_BYTES: usize = 8;
const CRC_BYTES: usize = 4;
/// Magic, version, node id, incarnation and membership length.
const META_FIXED_BYTES: usize = MAGIC_BYTES + 4 + 8 + 8 + 4;
/// The same in a version 2 meta, which has no incarnation.
const LEGACY_META_FIXED_BYTES: usize = MAGIC_BYTES + 4 + 8 + 4;
/// Magic, term and vote, then the checksum.
pub(crate) const HARD_STATE_BYTES: usize = MAGIC_BYTES + 8 + 8 + CRC_BYTES;
/// Magic, first index, salt and four zero bytes, then the checksum.
pub(crate) const SEGMENT_HEADER_BYTES: usize = MAGIC_BYTES + 8 + 8 + 4 + CRC_BYTES;
/// A record's length and checksum.
pub(crate) const RECORD_HEADER_BYTES: usize = 4 + CRC_BYTES;
pub(crate) const BATCH_MAGIC: &[u8; 4] = b"YBAT";
/// A batch's magic, length, records checksum and header checksum.
pub(crate) const BATCH_HEADER_BYTES: usize = 4 + 4 + CRC_BYTES + CRC_BYTES;
/// Every batch starts at a multiple of this.
pub(crate) const BATCH_ALIGN: u64 = 16;
/// The unit a disk writes whole or not at all (the smallest in use).
const SECTOR_BYTES: u64 = 512;

/// The largest entry a record may hold. A length read from disk above it is corruption, and
/// no allocation is ever sized by an unchecked length.
pub(crate) const MAX_RECORD_BYTES: usize = 256 << 20;
/// The most record bytes one batch holds: its length field is a `u32`. An append larger than
/// this is written as several batches, each synced before the next is written.
pub(crate) const MAX_BATCH_BYTES: usize = 1 << 30;
/// The largest configuration a meta or snapshot file may hold.
const MAX_MEMBERSHIP_BYTES: usize = 16 << 20;

const _: () = assert!(MAX_RECORD_BYTES <= u32::MAX as usize);
const _: () = assert!(MAX_BATCH_BYTES + MAX_RECORD_BYTES <= u32::MAX as usize);
// An aligned batch header lies inside one sector, so rewriting it in place cannot tear.
const _: () = assert!(SECTOR_BYTES.is_multiple_of(BATCH_ALIGN));
const _: () = assert!(BATCH_HEADER_BYTES as u64 <= BATCH_ALIGN);
// The first batch starts right after the segment header.
const _: () = assert!((SEGMENT_HEADER_BYTES as u64).is_multiple_of(BATCH_ALIGN));

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

/// What a meta file holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Meta {
    pub(crate) node_id: NodeId,
    /// Never 0.
    pub(crate) incarnation: u64,
    pub(crate) founding: Membership,
}

/// The meta file: the format version, the node's id, the incarnation of its data and the
/// founding configuration.
pub(crate) fn encode_meta(meta: &Meta) -> Vec<u8> {
    assert!(meta.incarnation != 0, "an incarnation is never 0");
    let membership = encode_membership(&meta.founding);
    let mut bytes = Vec::with_capacity(META_FIXED_BYTES + membership.len() + CRC_BYTES);
    bytes.extend_from_slice(META_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&meta.node_id.get().to_le_bytes());
    bytes.extend_from_slice(&meta.incarnation.to_le_bytes());
    bytes.extend_from_slice(&(membership.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&membership);
    with_crc(bytes)
}

/// What a meta file of this version or the legacy one holds.
pub(crate) fn decode_meta(bytes: &[u8]) -> Result<Meta, FormatError> {
    check_framing(bytes, META_MAGIC, "meta")?;
    if bytes.len() < MAGIC_BYTES + 4 {
        return refused(0, "meta file is truncated");
    }
    let version = u32_at(bytes, MAGIC_BYTES);
    let fixed = match version {
        FORMAT_VERSION => META_FIXED_BYTES,
        LEGACY_FORMAT_VERSION => LEGACY_META_FIXED_BYTES,
        _ => {
            return refused(
                MAGIC_BYTES,
                format!(
                    "format version {version}; this build reads versions \
                     {LEGACY_FORMAT_VERSION} and {FORMAT_VERSION}"
                ),
            );
        }
    };
    if bytes.len() < fixed + CRC_BYTES {
        return refused(0, "meta file is truncated");
    }
    let Some(node_id) = NodeId::new(u64_at(bytes, MAGIC_BYTES + 4)) else {
        return refused(MAGIC_BYTES + 4, "meta file names node id 0");
    };
    let incarnation = if version == FORMAT_VERSION {
        let incarnation = u64_at(bytes, MAGIC_BYTES + 12);
        if incarnation == 0 {
            return refused(MAGIC_BYTES + 12, "meta file names incarnation 0");
        }
        incarnation
    } else {
        // Derived, not stored: the same at every open, and different from any other node's
        // (the file holds the node's id and founding configuration).
        non_zero(fnv1a_64(bytes))
    };
    let length_at = fixed - 4;
    let length = u32_at(bytes, length_at) as usize;
    if length > MAX_MEMBERSHIP_BYTES || fixed + length + CRC_BYTES != bytes.len() {
        return refused(length_at, "meta file length does not match its contents");
    }
    let founding = decode_membership(&bytes[fixed..fixed + length])
        .or_else(|error| refused(fixed, format!("founding configuration: {error}")))?;
    Ok(Meta {
        node_id,
        incarnation,
        founding,
    })
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

pub(crate) fn encode_segment_header(first: LogIndex, salt: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut header = [0; SEGMENT_HEADER_BYTES];
    header[..MAGIC_BYTES].copy_from_slice(SEGMENT_MAGIC);
    header[MAGIC_BYTES..MAGIC_BYTES + 8].copy_from_slice(&first.get().to_le_bytes());
    header[MAGIC_BYTES + 8..MAGIC_BYTES + 16].copy_from_slice(&salt.to_le_bytes());
    let covered = SEGMENT_HEADER_BYTES - CRC_BYTES;
    let crc = crc32c::crc32c(&header[..covered]);
    header[covered..].copy_from_slice(&crc.to_le_bytes());
    header
}

/// The first index and the salt a segment header holds.
pub(crate) fn decode_segment_header(bytes: &[u8]) -> Result<(LogIndex, u64), FormatError> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return refused(0, "segment header is truncated");
    }
    check_framing(&bytes[..SEGMENT_HEADER_BYTES], SEGMENT_MAGIC, "segment")?;
    Ok((
        LogIndex::new(u64_at(bytes, MAGIC_BYTES)),
        u64_at(bytes, MAGIC_BYTES + 8),
    ))
}

/// Where a batch lies: its segment's salt and its offset in the file. Both are covered by
/// the batch's header checksum, so the same bytes anywhere else are not a valid batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchPlace {
    pub(crate) salt: u64,
    pub(crate) offset: u64,
}

/// The first offset at or after `offset` where a batch may start.
pub(crate) fn align_batch(offset: u64) -> u64 {
    offset.div_ceil(BATCH_ALIGN) * BATCH_ALIGN
}

/// Starts a batch at the end of `out`; returns where its header is, for [`finish_batch`].
pub(crate) fn start_batch(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0; BATCH_HEADER_BYTES]);
    start
}

/// Fills in the header of the batch started at `start`, whose records are everything after
/// its header.
pub(crate) fn finish_batch(out: &mut [u8], start: usize, place: BatchPlace) {
    let header = batch_header(&out[start + BATCH_HEADER_BYTES..], place);
    out[start..start + BATCH_HEADER_BYTES].copy_from_slice(&header);
}

/// The header of a batch holding `records` at `place`.
pub(crate) fn batch_header(records: &[u8], place: BatchPlace) -> [u8; BATCH_HEADER_BYTES] {
    assert_eq!(
        place.offset % BATCH_ALIGN,
        0,
        "invariant: batches start at a multiple of BATCH_ALIGN"
    );
    let mut header = [0; BATCH_HEADER_BYTES];
    header[..4].copy_from_slice(BATCH_MAGIC);
    header[4..8].copy_from_slice(&(records.len() as u32).to_le_bytes());
    header[8..12].copy_from_slice(&crc32c::crc32c(records).to_le_bytes());
    let crc = header_crc(&header[..12], place);
    header[12..].copy_from_slice(&crc.to_le_bytes());
    header
}

fn header_crc(first_twelve: &[u8], place: BatchPlace) -> u32 {
    let mut crc = crc32c::crc32c(&place.salt.to_le_bytes());
    crc = crc32c::crc32c_append(crc, &place.offset.to_le_bytes());
    crc32c::crc32c_append(crc, first_twelve)
}

/// Whether the 16 bytes at the start of `bytes` are a batch header written at `place`: its
/// own checksum checks out. Says nothing about the records.
fn header_checks_out(bytes: &[u8], place: BatchPlace) -> bool {
    bytes.len() >= BATCH_HEADER_BYTES
        && &bytes[..4] == BATCH_MAGIC
        && header_crc(&bytes[..12], place) == u32_at(bytes, 12)
}

/// The length of the records of the whole, checksummed batch at the start of `bytes`, which
/// lie at `place`, or `None` when there is none there.
pub(crate) fn valid_batch(bytes: &[u8], place: BatchPlace) -> Option<usize> {
    if !header_checks_out(bytes, place) {
        return None;
    }
    let length = u32_at(bytes, 4) as usize;
    let end = BATCH_HEADER_BYTES.checked_add(length)?;
    if length == 0 || end > bytes.len() {
        return None;
    }
    (crc32c::crc32c(&bytes[BATCH_HEADER_BYTES..end]) == u32_at(bytes, 8)).then_some(length)
}

/// The batch boundaries at or after `from` in `segment` (the whole file of the segment
/// salted `salt`) whose header checks out: the only places whose records are worth a
/// checksum. Costs 16 bytes of checksum per boundary.
fn checked_headers(segment: &[u8], from: u64, salt: u64) -> impl Iterator<Item = u64> + '_ {
    (align_batch(from)..segment.len() as u64)
        .step_by(BATCH_ALIGN as usize)
        .filter(move |at| {
            header_checks_out(&segment[*at as usize..], BatchPlace { salt, offset: *at })
        })
}

/// Whether a valid batch of the segment salted `salt` starts at any batch boundary at or
/// after `from` in `segment` (the whole file). Linear in the bytes after `from` for any
/// bytes not written by this segment's own appends: a record checksum is computed only where
/// a header checks out.
pub(crate) fn any_valid_batch(segment: &[u8], from: u64, salt: u64) -> bool {
    checked_headers(segment, from, salt).any(|at| {
        let place = BatchPlace { salt, offset: at };
        valid_batch(&segment[at as usize..], place).is_some()
    })
}

/// Checks the bytes of a segment's last file from `written_end` (where its last whole batch
/// ends; `next_index` is the index a record there would hold) to the end of the file, which
/// recovery found not to be a whole batch. `Ok` when they are what a crash in the middle of
/// the last append, or of a cut, can leave: recovery cuts them off. Otherwise the error names
/// the offset of the batch that does not check out and why it cannot be torn.
///
/// The rules, from what a crash can do to the one append whose `fdatasync` did not return
/// (every earlier byte was synced before that append was written):
/// - The records of an interrupted cut (see `cut_segment`): whole records that continue the
///   batch before them, then the zero padding that preceded the batch after them.
/// - A short file: it ends inside the header, or inside the records its header's length
///   covers (the header checks out, so that length is the one that was written).
/// - A full-length batch (the file ends where its header says it does) with an all-zero
///   sector chunk outside the records that check out: part of it never reached the disk. Its
///   chunks are its bytes cut at every multiple of the sector size in the file, the first and
///   last possibly shorter. Zeros inside a record whose own checksum holds are its data.
/// - A header that does not check out, in a sector chunk that reads all zeros, with no valid
///   batch anywhere after it: the header's sector never reached the disk.
///
/// Everything else is corruption: a full-length batch with no all-zero chunk (a flipped bit),
/// any byte after the end of a batch whose header checks out (a later append wrote it, so
/// the batch was synced before), a header that does not check out in a sector that was
/// written (a disk writes a sector whole or not at all), or a valid batch after a bad one.
///
/// One crash state looks like something else: a last batch all of whose bytes read zeros,
/// from its header to the end of the file, cannot be told from zeros written over several
/// synced batches from a batch boundary on; it is taken for the torn append.
pub(crate) fn check_torn_tail(
    segment: &Bytes,
    written_end: u64,
    next_index: LogIndex,
    salt: u64,
) -> Result<(), FormatError> {
    let length = segment.len() as u64;
    assert!(written_end < length, "invariant: there is a tail to check");
    if is_interrupted_cut(segment, written_end, next_index) {
        return Ok(());
    }
    let at = align_batch(written_end);
    if length < at + BATCH_HEADER_BYTES as u64 {
        return Ok(());
    }
    let header = &segment[at as usize..];
    if header_checks_out(header, BatchPlace { salt, offset: at }) {
        let end = at + (BATCH_HEADER_BYTES as u64) + u64::from(u32_at(header, 4));
        if end > length {
            return Ok(());
        }
        if end < length {
            return refused(
                at as usize,
                format!(
                    "batch checksum mismatch with {} bytes after the batch: a later append \
                     wrote them once this batch was synced, so it is not a torn write",
                    length - end
                ),
            );
        }
        if holds_unwritten_sector_outside_valid_records(segment, at, end) {
            return Ok(());
        }
        return refused(
            at as usize,
            "batch checksum mismatch over the batch's full length with no unwritten (all-zero) \
             sector outside its valid records: a changed byte, not a torn write",
        );
    }
    let sector_end = ((at / SECTOR_BYTES + 1) * SECTOR_BYTES).min(length);
    if !holds_unwritten_sector(segment, at..sector_end) {
        return refused(
            at as usize,
            "batch header does not check out in a sector that was written: not a torn write",
        );
    }
    if any_valid_batch(segment, at + BATCH_ALIGN, salt) {
        return refused(
            at as usize,
            "batch checksum mismatch before a valid batch: it was synced before that one was \
             written",
        );
    }
    Ok(())
}

/// Whether a sector chunk of the full-length batch at `at..end` reads all zeros in bytes
/// that no record checking out covers. Zeros inside records whose own checksums hold are
/// data they carry (a zero-filled value), not a sector that never reached the disk: an
/// unwritten sector always breaks the record (or the record length) it falls in.
fn holds_unwritten_sector_outside_valid_records(segment: &Bytes, at: u64, end: u64) -> bool {
    // The records that check out, in order; a record whose length cannot be read ends the
    // walk, leaving the rest of the batch uncovered.
    let mut valid: Vec<std::ops::Range<u64>> = Vec::new();
    let mut position = at + BATCH_HEADER_BYTES as u64;
    while position < end {
        let bytes = segment.slice(position as usize..end as usize);
        if bytes.len() < RECORD_HEADER_BYTES {
            break;
        }
        let length = u32_at(&bytes, 0) as usize;
        if length == 0 || length > MAX_RECORD_BYTES || RECORD_HEADER_BYTES + length > bytes.len() {
            break;
        }
        let record_end = position + (RECORD_HEADER_BYTES + length) as u64;
        if matches!(decode_record(&bytes), Record::Entry(..)) {
            valid.push(position..record_end);
        }
        position = record_end;
    }
    let covered = |start: u64, end: u64| {
        let mut reached = start;
        for record in &valid {
            if record.start <= reached && record.end > reached {
                reached = record.end;
            }
        }
        reached >= end
    };
    let mut start = at;
    while start < end {
        let chunk_end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(end);
        let zeros = segment[start as usize..chunk_end as usize]
            .iter()
            .all(|byte| *byte == 0);
        if zeros && !covered(start, chunk_end) {
            return true;
        }
        start = chunk_end;
    }
    false
}

/// Whether any sector chunk of `range` (its bytes cut at every multiple of the sector size
/// in the file) reads all zeros.
fn holds_unwritten_sector(segment: &[u8], range: std::ops::Range<u64>) -> bool {
    let mut start = range.start;
    while start < range.end {
        let end = ((start / SECTOR_BYTES + 1) * SECTOR_BYTES).min(range.end);
        if segment[start as usize..end as usize]
            .iter()
            .all(|byte| *byte == 0)
        {
            return true;
        }
        start = end;
    }
    false
}

/// Whether the bytes from `written_end` on are what a cut interrupted after rewriting the
/// header of the batch it cut into leaves: the records the shortened batch no longer covers,
/// whole and continuing it from `next_index`, then the zero padding (shorter than a batch
/// alignment) that preceded the next batch, which the cut had already removed.
fn is_interrupted_cut(segment: &Bytes, written_end: u64, next_index: LogIndex) -> bool {
    let mut at = written_end as usize;
    let mut expected = next_index;
    while let Record::Entry(entry, record_length) = decode_record(&segment.slice(at..)) {
        if entry.index != expected {
            return false;
        }
        at += record_length;
        expected = LogIndex::new(expected.get() + 1);
    }
    let padding = &segment[at..];
    at > written_end as usize
        && (padding.len() as u64) < BATCH_ALIGN
        && padding.iter().all(|byte| *byte == 0)
}

/// Appends the record of `entry` to `out`, or refuses an entry too large for a record (one
/// that [`decode_record`] would refuse), leaving `out` as it was.
pub(crate) fn encode_record(entry: &LogEntry<Bytes>, out: &mut Vec<u8>) -> Result<(), String> {
    let payload = encode_entry(entry, |command: &Bytes| command.to_vec());
    if payload.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "entry {} encodes to {} bytes, above the {} a log record may hold",
            entry.index.get(),
            payload.len(),
            MAX_RECORD_BYTES
        ));
    }
    let start = out.len();
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&[0; CRC_BYTES]);
    out.extend_from_slice(&payload);
    let mut crc = crc32c::crc32c(&out[start..start + 4]);
    crc = crc32c::crc32c_append(crc, &payload);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
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

    fn meta(node: u64, founding: &Membership) -> Meta {
        Meta {
            node_id: id(node),
            incarnation: 77,
            founding: founding.clone(),
        }
    }

    /// A meta file as version 2 wrote it: no incarnation.
    fn legacy_meta(node: u64, founding: &Membership) -> Vec<u8> {
        let membership = encode_membership(founding);
        let mut bytes = Vec::new();
        bytes.extend_from_slice(META_MAGIC);
        bytes.extend_from_slice(&LEGACY_FORMAT_VERSION.to_le_bytes());
        bytes.extend_from_slice(&node.to_le_bytes());
        bytes.extend_from_slice(&(membership.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&membership);
        with_crc(bytes)
    }

    #[test]
    fn a_version_2_meta_opens_with_an_incarnation_derived_from_its_bytes() {
        let founders = Membership::from_voters([id(1), id(2), id(3)]);
        let decoded = decode_meta(&legacy_meta(2, &founders)).unwrap();
        assert_eq!((decoded.node_id, &decoded.founding), (id(2), &founders));
        assert_ne!(decoded.incarnation, 0);
        assert_eq!(
            decode_meta(&legacy_meta(2, &founders)).unwrap().incarnation,
            decoded.incarnation
        );
        assert_ne!(
            decode_meta(&legacy_meta(3, &founders)).unwrap().incarnation,
            decoded.incarnation
        );
        let mut unknown = legacy_meta(2, &founders);
        unknown[MAGIC_BYTES..MAGIC_BYTES + 4].copy_from_slice(&4u32.to_le_bytes());
        let covered = unknown.len() - CRC_BYTES;
        let crc = crc32c::crc32c(&unknown[..covered]);
        unknown[covered..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode_meta(&unknown).is_err());
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
        let meta = Meta {
            node_id: id(3),
            incarnation: 0xabcd,
            founding: membership.clone(),
        };
        assert_eq!(decode_meta(&encode_meta(&meta)).unwrap(), meta);
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
        let header = encode_segment_header(LogIndex::new(42), 0xfeed);
        assert_eq!(
            decode_segment_header(&header).unwrap(),
            (LogIndex::new(42), 0xfeed)
        );
        let mut bytes = Vec::new();
        encode_record(&entry(5, 2, b"abc"), &mut bytes).unwrap();
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
            encode_meta(&meta(1, &membership)),
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
        encode_record(&entry(1, 1, b"hello"), &mut bytes).unwrap();
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
        let place = BatchPlace {
            salt: 7,
            offset: 48,
        };
        let mut bytes = Vec::new();
        let start = start_batch(&mut bytes);
        encode_record(&entry(1, 1, b"one"), &mut bytes).unwrap();
        encode_record(&entry(2, 1, b"two"), &mut bytes).unwrap();
        finish_batch(&mut bytes, start, place);
        assert_eq!(
            valid_batch(&bytes, place),
            Some(bytes.len() - BATCH_HEADER_BYTES)
        );
        assert_eq!(
            batch_header(&bytes[BATCH_HEADER_BYTES..], place)[..],
            bytes[..BATCH_HEADER_BYTES]
        );
        for byte in 0..bytes.len() {
            let mut broken = bytes.clone();
            broken[byte] ^= 0x04;
            assert_eq!(
                valid_batch(&broken, place),
                None,
                "byte {byte} went unnoticed"
            );
        }
        assert_eq!(valid_batch(&bytes[..bytes.len() - 1], place), None);
    }

    #[test]
    fn a_batch_is_valid_only_at_its_own_offset_in_its_own_segment() {
        let place = BatchPlace {
            salt: 7,
            offset: 48,
        };
        let mut bytes = Vec::new();
        let start = start_batch(&mut bytes);
        encode_record(&entry(1, 1, b"one"), &mut bytes).unwrap();
        finish_batch(&mut bytes, start, place);
        let moved = BatchPlace {
            offset: 64,
            ..place
        };
        let other_segment = BatchPlace { salt: 8, ..place };
        assert_eq!(valid_batch(&bytes, moved), None);
        assert_eq!(valid_batch(&bytes, other_segment), None);
        // Found by the scan at its own offset, and only there.
        let mut segment = vec![0xee; 48];
        segment.extend_from_slice(&bytes);
        assert!(any_valid_batch(&segment, 0, 7));
        assert!(any_valid_batch(&segment, 48, 7));
        assert!(!any_valid_batch(&segment, 49, 7));
        assert!(!any_valid_batch(&segment, 0, 8));
        assert!(!any_valid_batch(&segment[..segment.len() - 1], 0, 7));
        let mut shifted = vec![0xee; 64];
        shifted.extend_from_slice(&bytes);
        assert!(!any_valid_batch(&shifted, 0, 7));
    }

    /// A tail full of batch magic, each claiming to run to the end of the file, would cost
    /// a checksum over the rest of the file per boundary (quadratic) if the scan trusted the
    /// magic; the header checksum turns every one of them away for 16 bytes of work.
    #[test]
    fn the_scan_for_a_later_batch_checksums_records_only_under_a_valid_header() {
        let n = 1 << 20;
        let mut tail = vec![0u8; n];
        for at in (0..n - BATCH_HEADER_BYTES).step_by(BATCH_ALIGN as usize) {
            let length = (n - at - BATCH_HEADER_BYTES) as u32;
            tail[at..at + 4].copy_from_slice(BATCH_MAGIC);
            tail[at + 4..at + 8].copy_from_slice(&length.to_le_bytes());
        }
        assert_eq!(checked_headers(&tail, 0, 7).count(), 0);
        assert!(!any_valid_batch(&tail, 0, 7));
        // One real batch among them is found, and it is the only header that checks out.
        let place = BatchPlace {
            salt: 7,
            offset: 4096,
        };
        let mut real = Vec::new();
        let start = start_batch(&mut real);
        encode_record(&entry(1, 1, b"one"), &mut real).unwrap();
        finish_batch(&mut real, start, place);
        tail[4096..4096 + real.len()].copy_from_slice(&real);
        assert_eq!(checked_headers(&tail, 0, 7).collect::<Vec<_>>(), vec![4096]);
        assert!(any_valid_batch(&tail, 0, 7));
    }

    #[test]
    fn batches_start_on_sixteen_byte_boundaries_inside_one_sector() {
        for offset in 0..2048u64 {
            let aligned = align_batch(offset);
            assert!(aligned >= offset && aligned - offset < BATCH_ALIGN);
            assert_eq!(
                aligned / SECTOR_BYTES,
                (aligned + BATCH_HEADER_BYTES as u64 - 1) / SECTOR_BYTES,
                "a header at {aligned} straddles a sector"
            );
        }
    }

    #[test]
    fn truncated_and_garbage_files_are_refused() {
        let hard = encode_hard_state(Term::new(1), None);
        assert!(decode_hard_state(&hard[..hard.len() - 1]).is_err());
        assert!(decode_hard_state(b"").is_err());
        assert!(decode_meta(b"garbage garbage garbage").is_err());
        let meta = encode_meta(&meta(1, &Membership::default()));
        assert!(decode_meta(&meta[..meta.len() - 2]).is_err());
        assert!(decode_snapshot(&[0; 64]).is_err());
    }
}
