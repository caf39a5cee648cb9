//! The log as append-only segment files under `log/`, each named by the index of its first
//! entry (see [`format`](super::format) for the bytes).
//!
//! Invariants, kept by every operation:
//! - segments are sorted and contiguous: each one's first index is the previous one's last
//!   index + 1;
//! - only the last segment is ever written to; appending costs O(bytes appended), and
//!   truncating a suffix is an `ftruncate` of one file and the removal of whole later ones;
//! - `next` is the index the next append must start at: one past the last stored entry, or
//!   wherever [`SegmentedLog::clear`] put it.

use crate::sys::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tracing::warn;
use yggr_core::{LogEntry, LogIndex, Term};

use super::files::sync_dir;
use super::format::{
    BATCH_HEADER_BYTES, BatchPlace, MAX_BATCH_BYTES, Record, SEGMENT_HEADER_BYTES, align_batch,
    batch_header, check_torn_tail, decode_record, decode_segment_header, encode_record,
    encode_segment_header, finish_batch, start_batch, valid_batch,
};
use super::{DiskError, corrupt, io_error};

const SEGMENT_SUFFIX: &str = ".seg";
/// A segment the log no longer holds is renamed to carry this suffix (after its own), and
/// its file is removed later, off the driver's path; an open removes any it finds.
pub(crate) const RETIRED_SUFFIX: &str = ".retired";
/// The largest first index a segment may carry.
const MAX_FIRST_INDEX: u64 = u64::MAX / 2;

/// One segment file.
#[derive(Debug)]
struct Segment {
    first: LogIndex,
    path: PathBuf,
    /// Random, chosen when the segment was created; every batch's header checksum covers it.
    salt: u64,
    /// The byte offset of each record: record `i` holds index `first + i`.
    offsets: Vec<u64>,
    /// Each batch: the offset of its header and the position (in `offsets`) of its first
    /// record.
    batches: Vec<(u64, usize)>,
    /// Bytes in the file: the header and every batch.
    length: u64,
}

impl Segment {
    /// The index one past the last record.
    fn end(&self) -> LogIndex {
        LogIndex::new(self.first.get() + self.offsets.len() as u64)
    }

    fn contains(&self, index: LogIndex) -> bool {
        index >= self.first && index < self.end()
    }
}

/// The log's segment files.
#[derive(Debug)]
pub(crate) struct SegmentedLog {
    dir: PathBuf,
    segments: Vec<Segment>,
    /// The last segment, open for appending.
    active: Option<File>,
    next: LogIndex,
    /// A segment at least this long gets no more appends: the next batch starts a new one.
    segment_bytes_limit: u64,
    /// Once a batch holds this many record bytes, the rest of an append goes into the next
    /// one ([`MAX_BATCH_BYTES`]; smaller in tests).
    batch_bytes_limit: usize,
    /// Segment files renamed out of the log (see [`RETIRED_SUFFIX`]) and not yet removed:
    /// the storage hands them to a background task, because removing a large file can take
    /// longer than an election timeout (the filesystem frees every extent).
    retired: Vec<PathBuf>,
    /// Test-only fault point: how many more segment files may be removed before the next
    /// removal fails, as if the process had died there.
    #[cfg(test)]
    pub(crate) removals_before_crash: Option<usize>,
}

/// Fails, as a crash would stop the process, once `removals_before_crash` removals are done.
#[cfg(test)]
fn crash_point(removals_before_crash: &mut Option<usize>, path: &Path) -> Result<(), DiskError> {
    match removals_before_crash {
        Some(0) => Err(io_error(
            path,
            std::io::Error::other("the test's crash point before this removal"),
        )),
        Some(left) => {
            *left -= 1;
            Ok(())
        }
        None => Ok(()),
    }
}

/// Where a segment file goes when the log retires it.
fn retired_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(RETIRED_SUFFIX);
    PathBuf::from(name)
}

fn segment_name(first: LogIndex) -> String {
    format!("{:020}{SEGMENT_SUFFIX}", first.get())
}

/// The first index a segment file's name gives, or `None` for any other file.
fn parse_segment_name(path: &Path) -> Option<LogIndex> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().map(LogIndex::new)
}

/// How a segment's bytes ended.
enum Ending {
    /// Every byte belongs to a whole record.
    Clean,
    /// The bytes from this offset on are an interrupted append.
    TornAt(u64),
}

impl SegmentedLog {
    /// Reads every segment under `dir` once, in order, and returns the log with every stored
    /// entry. What a crash can leave at the end of the last segment (an interrupted creation,
    /// see [`interrupted_creation`]; a torn last batch, see [`check_torn_tail`]) is removed or
    /// cut off; anything else that does not check out is an error naming the file and the
    /// offset, and leaves the files as they were.
    pub(crate) fn recover(
        dir: &Path,
        segment_bytes_limit: u64,
    ) -> Result<(SegmentedLog, Vec<LogEntry<Bytes>>), DiskError> {
        let mut paths = Vec::new();
        for path in fs::read_dir(dir).map_err(|error| io_error(dir, error))? {
            if let Some(first) = parse_segment_name(&path) {
                // Indexes are sums of a segment's first index and its record count: a name
                // near u64::MAX cannot come from a real log, and would overflow them.
                if first.get() == 0 || first.get() > MAX_FIRST_INDEX {
                    return Err(corrupt(&path, 0, "segment name holds an impossible index"));
                }
                paths.push((first, path));
            }
        }
        paths.sort();
        let mut log = SegmentedLog {
            dir: dir.to_path_buf(),
            segments: Vec::with_capacity(paths.len()),
            active: None,
            next: LogIndex::new(1),
            segment_bytes_limit,
            batch_bytes_limit: MAX_BATCH_BYTES,
            retired: Vec::new(),
            #[cfg(test)]
            removals_before_crash: None,
        };
        let mut entries = Vec::new();
        let count = paths.len();
        for (position, (first, path)) in paths.into_iter().enumerate() {
            let last = position + 1 == count;
            if let Some(previous) = log.segments.last()
                && previous.end() != first
            {
                return Err(corrupt(
                    &path,
                    0,
                    format!(
                        "the log has a gap: the previous segment ends before index {}, this one starts at {}",
                        previous.end().get(),
                        first.get()
                    ),
                ));
            }
            let bytes = Bytes::from(fs::read(&path).map_err(|error| io_error(&path, error))?);
            if last && interrupted_creation(&bytes) {
                warn!(target: "yggr::node", path = %path.display(), "removing a segment whose creation a crash interrupted");
                log.remove_durably(&path)?;
                continue;
            }
            let (segment, ending) = read_segment(first, &path, &bytes, &mut entries, last)?;
            if last {
                // Before anything else is written: a cut of a torn tail, synced, must not
                // reach the disk while the batch before it is still in the page cache only.
                make_last_batch_durable(&segment)?;
            }
            if let Ending::TornAt(offset) = ending {
                warn!(target: "yggr::node", path = %path.display(), offset, dropped = bytes.len() as u64 - offset, "cutting off a torn record at the end of the log");
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|error| io_error(&path, error))?;
                file.set_len(offset)
                    .and_then(|()| file.sync_all())
                    .map_err(|error| io_error(&path, error))?;
            }
            if last && segment.offsets.is_empty() {
                // A crash after the segment's header was synced and before its first batch
                // was. Keeping it would pin the next append to its name even when a snapshot
                // has since moved the log's start past it.
                warn!(target: "yggr::node", path = %path.display(), "removing a segment that holds no entries");
                log.remove_durably(&path)?;
                continue;
            }
            log.segments.push(segment);
        }
        if let Some(last) = log.segments.last() {
            log.next = last.end();
        }
        // Renames and removals a predecessor made before it stopped reach the disk now.
        sync_dir(dir).map_err(|error| io_error(dir, error))?;
        Ok((log, entries))
    }

    /// The index the next append must start at.
    pub(crate) fn next(&self) -> LogIndex {
        self.next
    }

    /// The size at which a segment stops taking appends.
    pub(crate) fn segment_bytes_limit(&self) -> u64 {
        self.segment_bytes_limit
    }

    pub(crate) fn set_segment_bytes_limit(&mut self, bytes: u64) {
        self.segment_bytes_limit = bytes;
    }

    /// The number of segment files.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// The term of the stored entry at `index`, read back from its record.
    pub(crate) fn term_at(&self, index: LogIndex) -> Result<Option<Term>, DiskError> {
        let Some(segment) = self.segments.iter().find(|segment| segment.contains(index)) else {
            return Ok(None);
        };
        let position = (index.get() - segment.first.get()) as usize;
        let start = segment.offsets[position];
        let end = segment
            .offsets
            .get(position + 1)
            .copied()
            .unwrap_or(segment.length);
        let file = File::open(&segment.path).map_err(|error| io_error(&segment.path, error))?;
        let mut bytes = vec![0; (end - start) as usize];
        file.read_exact_at(&mut bytes, start)
            .map_err(|error| io_error(&segment.path, error))?;
        match decode_record(&Bytes::from(bytes)) {
            Record::Entry(entry, _) if entry.index == index => Ok(Some(entry.term)),
            Record::Entry(entry, _) => Err(corrupt(
                &segment.path,
                start,
                format!(
                    "record holds index {}, expected {}",
                    entry.index.get(),
                    index.get()
                ),
            )),
            Record::Incomplete => Err(corrupt(&segment.path, start, "record is truncated")),
            Record::Bad(reason) => Err(corrupt(&segment.path, start, reason)),
        }
    }

    /// Appends `entries`, which must start at [`next`](Self::next) and be consecutive, with
    /// one write and one `fdatasync` (after creating and syncing a new segment first when the
    /// last one is full). An append of more than [`MAX_BATCH_BYTES`] takes one batch, write and
    /// `fdatasync` per such share.
    ///
    /// An entry too large for a record is refused before its batch is written.
    pub(crate) fn append(&mut self, entries: &[LogEntry<Bytes>]) -> Result<(), DiskError> {
        assert!(
            self.batch_bytes_limit <= MAX_BATCH_BYTES,
            "invariant: a batch's length fits its u32 field"
        );
        let Some(first) = entries.first() else {
            return Ok(());
        };
        assert_eq!(
            first.index, self.next,
            "invariant: appends start where the log ends"
        );
        // A segment without records is never full: its file already carries the name the
        // next append's segment would take.
        let full = self.segments.last().is_none_or(|segment| {
            segment.length >= self.segment_bytes_limit && !segment.offsets.is_empty()
        });
        if full {
            self.create_segment(first.index)?;
        } else if self.active.is_none() {
            self.reopen_active()?;
        }
        let mut rest = entries;
        while !rest.is_empty() {
            let written = self.append_batch(rest)?;
            rest = &rest[written..];
        }
        Ok(())
    }

    /// Writes as many of `entries` as one batch holds (at least one) to the end of the active
    /// segment, with one write and one `fdatasync`; returns how many it wrote.
    fn append_batch(&mut self, entries: &[LogEntry<Bytes>]) -> Result<usize, DiskError> {
        let batch_bytes_limit = self.batch_bytes_limit;
        let segment = self
            .segments
            .last_mut()
            .expect("invariant: an append has an active segment");
        let base = segment.length;
        let place = BatchPlace {
            salt: segment.salt,
            offset: align_batch(base),
        };
        // Zero padding up to the batch's boundary, then the batch.
        let mut bytes = vec![0; (place.offset - base) as usize];
        let batch_start = start_batch(&mut bytes);
        let records_start = bytes.len();
        let mut offsets = Vec::with_capacity(entries.len());
        for entry in entries {
            if !offsets.is_empty() && bytes.len() - records_start >= batch_bytes_limit {
                break;
            }
            assert_eq!(
                entry.index,
                LogIndex::new(segment.end().get() + offsets.len() as u64),
                "invariant: appended entries are consecutive"
            );
            offsets.push(base + bytes.len() as u64);
            encode_record(entry, &mut bytes).map_err(DiskError::Refused)?;
        }
        finish_batch(&mut bytes, batch_start, place);
        let file = self.active.as_ref().expect("the active segment is open");
        file.write_all_at(&bytes, base)
            .and_then(|()| file.sync_data())
            .map_err(|error| io_error(&segment.path, error))?;
        let written = offsets.len();
        segment.batches.push((place.offset, segment.offsets.len()));
        segment.offsets.extend(offsets);
        segment.length += bytes.len() as u64;
        self.next = segment.end();
        Ok(written)
    }

    /// Creates the segment whose first entry will be `first` and makes it the active one.
    /// Its header and its directory entry are synced before any batch is written, so that a
    /// crash in the middle of the first append can tear only that batch, and a crash before
    /// leaves a file no longer than a header (see [`interrupted_creation`]).
    fn create_segment(&mut self, first: LogIndex) -> Result<(), DiskError> {
        let path = self.dir.join(segment_name(first));
        // The salt only has to differ between segments; it is not a secret and affects no
        // behaviour, so it need not come from a seeded generator.
        let salt = crate::sys::random::u64();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|error| io_error(&path, error))?;
        file.write_all_at(&encode_segment_header(first, salt), 0)
            .and_then(|()| file.sync_data())
            .map_err(|error| io_error(&path, error))?;
        sync_dir(&self.dir).map_err(|error| io_error(&self.dir, error))?;
        self.segments.push(Segment {
            first,
            path,
            salt,
            offsets: Vec::new(),
            batches: Vec::new(),
            length: SEGMENT_HEADER_BYTES as u64,
        });
        self.active = Some(file);
        Ok(())
    }

    /// Removes every stored entry at or past `index`, in place.
    pub(crate) fn truncate_from(&mut self, index: LogIndex) -> Result<(), DiskError> {
        if index >= self.next {
            return Ok(());
        }
        // Newest first: a crash part way leaves a shorter log, never one with a gap.
        while self
            .segments
            .last()
            .is_some_and(|segment| segment.first >= index)
        {
            let segment = self.segments.pop().expect("checked above");
            self.active = None;
            self.retire_durably(&segment.path)?;
        }
        if let Some(segment) = self.segments.last_mut()
            && segment.contains(index)
        {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&segment.path)
                .map_err(|error| io_error(&segment.path, error))?;
            cut_segment(segment, &file, index).map_err(|error| io_error(&segment.path, error))?;
            self.active = Some(file);
        }
        self.next = index;
        Ok(())
    }

    /// Removes every segment all of whose entries are at or below `index` (a snapshot now
    /// covers them). Entries at or below `index` in a segment that also holds later ones stay
    /// on disk and are skipped on recovery.
    pub(crate) fn remove_through(&mut self, index: LogIndex) -> Result<(), DiskError> {
        let whole = self
            .segments
            .iter()
            .take_while(|segment| segment.end() <= LogIndex::new(index.get() + 1))
            .count();
        if whole == 0 {
            return Ok(());
        }
        if whole == self.segments.len() {
            self.active = None;
        }
        // Oldest first: a crash part way leaves a log that still starts at or below
        // `index + 1`, with no gap, which recovery trims the same way.
        let covered: Vec<Segment> = self.segments.drain(..whole).collect();
        for segment in covered {
            self.retire_durably(&segment.path)?;
        }
        if self.segments.is_empty() && self.next <= index {
            self.next = LogIndex::new(index.get() + 1);
        }
        Ok(())
    }

    /// Removes every segment; the next append starts at `next`.
    ///
    /// Newest first, each removal durable before the next: a crash part way leaves a prefix
    /// of the log, starting where it did. Oldest first would leave a suffix, which can start
    /// right after a snapshot being installed and pass for a log that continues it.
    pub(crate) fn clear(&mut self, next: LogIndex) -> Result<(), DiskError> {
        self.active = None;
        while let Some(segment) = self.segments.pop() {
            self.retire_durably(&segment.path)?;
        }
        self.next = next;
        Ok(())
    }

    /// Takes one segment out of the log: renames it to its retired name and syncs the
    /// directory, so that the log loses its segments in the order they are retired (an
    /// unsynced directory may keep any subset of the renames). The file itself is removed
    /// later (see [`SegmentedLog::take_retired`]): a rename costs a directory entry, while a
    /// removal frees every block of the file.
    fn retire_durably(&mut self, path: &Path) -> Result<(), DiskError> {
        #[cfg(test)]
        crash_point(&mut self.removals_before_crash, path)?;
        let retired = retired_name(path);
        fs::rename(path, &retired).map_err(|error| io_error(path, error))?;
        sync_dir(&self.dir).map_err(|error| io_error(&self.dir, error))?;
        self.retired.push(retired);
        Ok(())
    }

    /// The retired segment files not yet handed out for removal, oldest retirement first.
    pub(crate) fn take_retired(&mut self) -> Vec<PathBuf> {
        std::mem::take(&mut self.retired)
    }

    /// Removes one segment file and syncs the directory, so that removals reach the disk in
    /// the order they are made (an unsynced directory may keep any subset of them).
    fn remove_durably(&mut self, path: &Path) -> Result<(), DiskError> {
        #[cfg(test)]
        crash_point(&mut self.removals_before_crash, path)?;
        fs::remove_file(path).map_err(|error| io_error(path, error))?;
        sync_dir(&self.dir).map_err(|error| io_error(&self.dir, error))
    }

    /// Sets where the next append starts when nothing is stored (after a snapshot past the
    /// end of the log, say).
    pub(crate) fn set_next_if_empty(&mut self, next: LogIndex) {
        if self.segments.is_empty() {
            self.next = next;
        }
    }

    fn reopen_active(&mut self) -> Result<(), DiskError> {
        let Some(segment) = self.segments.last() else {
            return Ok(());
        };
        let file = open_segment(segment)?;
        self.active = Some(file);
        Ok(())
    }
}

/// Opens `segment`'s file to read and write.
fn open_segment(segment: &Segment) -> Result<File, DiskError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&segment.path)
        .map_err(|error| io_error(&segment.path, error))
}

/// Writes the last whole batch of `segment` (the last one recovery read) once more and syncs
/// it.
///
/// A predecessor that stopped on a failed fsync may have left its last append (or the
/// header a cut rewrote) readable, in the page cache, but not on disk; and after a writeback
/// error the kernel no longer counts those pages as dirty, so no later fsync writes them.
/// This process has just read them and may acknowledge their entries, which a power loss
/// must then not take away. Only the last batch can be in that state: the predecessor
/// stopped at its first failed fsync, and every earlier append was synced before the next
/// one was written. Rewriting the same bytes dirties the pages again. It costs one write of
/// the last batch and one `fdatasync` per open.
fn make_last_batch_durable(segment: &Segment) -> Result<(), DiskError> {
    let Some((start, _)) = segment.batches.last() else {
        return Ok(());
    };
    let file = open_segment(segment)?;
    let mut bytes = vec![0; (segment.length - start) as usize];
    file.read_exact_at(&mut bytes, *start)
        .and_then(|()| file.write_all_at(&bytes, *start))
        .and_then(|()| file.sync_data())
        .map_err(|error| io_error(&segment.path, error))
}

/// Cuts `segment` (open as `file`) just before the record of `index`, keeping the batch
/// framing valid at every moment a crash could strike:
/// 1. the batches after the one holding `index` go (`ftruncate`, synced);
/// 2. when `index` is not that batch's first record, the batch's header is rewritten in place
///    for the records it keeps (synced; the header never straddles a sector, so the write is
///    whole or absent): a crash now leaves a valid shorter batch followed by stale bytes with
///    no valid batch after them, which recovery takes for a torn tail and cuts;
/// 3. the file is cut at the record (synced).
fn cut_segment(segment: &mut Segment, file: &File, index: LogIndex) -> std::io::Result<()> {
    let position = (index.get() - segment.first.get()) as usize;
    let record = segment.offsets[position];
    let batch = segment
        .batches
        .iter()
        .rposition(|(_, first_record)| *first_record <= position)
        .expect("invariant: every record belongs to a batch");
    let (batch_start, first_record) = segment.batches[batch];
    let batch_end = segment
        .batches
        .get(batch + 1)
        .map_or(segment.length, |(start, _)| *start);
    if batch_end < segment.length {
        file.set_len(batch_end)?;
        file.sync_data()?;
    }
    let cut = if first_record == position {
        batch_start
    } else {
        let records_start = batch_start + BATCH_HEADER_BYTES as u64;
        let mut kept = vec![0; (record - records_start) as usize];
        file.read_exact_at(&mut kept, records_start)?;
        let place = BatchPlace {
            salt: segment.salt,
            offset: batch_start,
        };
        // The header lies inside one sector (see `format`), so this write cannot tear.
        file.write_all_at(&batch_header(&kept, place), batch_start)?;
        file.sync_data()?;
        record
    };
    file.set_len(cut)?;
    file.sync_data()?;
    segment.offsets.truncate(position);
    segment.batches.retain(|(start, _)| *start < cut);
    segment.length = cut;
    Ok(())
}

/// Whether the bytes of the last segment are what a crash while [creating
/// it](SegmentedLog::create_segment) can leave. The file is created empty, its header written
/// and synced, then its directory entry synced, all before any batch is written: so the file
/// is shorter than a header, or a header's length of zeros (the size reached the disk, the
/// header's sector did not). Such a file holds no entry. A longer file whose header does not
/// check out held synced batches, and is corruption; so is a header-sized one holding
/// anything but zeros or a valid header (the header lies in one sector, written whole or not
/// at all). A valid header with nothing after it is removed once read, as a segment with no
/// entries.
fn interrupted_creation(bytes: &[u8]) -> bool {
    bytes.len() < SEGMENT_HEADER_BYTES
        || (bytes.len() == SEGMENT_HEADER_BYTES && bytes.iter().all(|byte| *byte == 0))
}

/// Parses one segment, appending its entries to `entries`.
fn read_segment(
    first: LogIndex,
    path: &Path,
    bytes: &Bytes,
    entries: &mut Vec<LogEntry<Bytes>>,
    last: bool,
) -> Result<(Segment, Ending), DiskError> {
    let (named, salt) =
        decode_segment_header(bytes).map_err(|error| corrupt(path, error.offset, error.reason))?;
    if named != first {
        return Err(corrupt(
            path,
            0,
            format!(
                "the header names first index {}, the file name {}",
                named.get(),
                first.get()
            ),
        ));
    }
    let mut segment = Segment {
        first,
        path: path.to_path_buf(),
        salt,
        offsets: Vec::new(),
        batches: Vec::new(),
        length: SEGMENT_HEADER_BYTES as u64,
    };
    // Where the last whole batch ends: a torn append is cut back to here, padding and all.
    let mut written_end = SEGMENT_HEADER_BYTES as u64;
    let mut at = written_end;
    while at < bytes.len() as u64 {
        let place = BatchPlace { salt, offset: at };
        let Some(length) = valid_batch(&bytes[at as usize..], place) else {
            break;
        };
        // The padding before a batch was written with it, as zeros, and no checksum covers
        // it: a byte changed there is the only sign of damage it can show.
        if bytes[written_end as usize..at as usize]
            .iter()
            .any(|byte| *byte != 0)
        {
            return Err(corrupt(
                path,
                written_end,
                "non-zero padding between two valid batches: a changed byte",
            ));
        }
        segment.batches.push((at, segment.offsets.len()));
        let end = at as usize + BATCH_HEADER_BYTES + length;
        read_batch_records(
            path,
            bytes,
            at as usize + BATCH_HEADER_BYTES..end,
            &mut segment,
            entries,
        )?;
        written_end = end as u64;
        at = align_batch(written_end);
    }
    let file_length = bytes.len() as u64;
    // A segment that is not the last was synced whole before the next one was created. (A
    // few bytes after its last batch, too few to start another, were accepted by earlier
    // builds as the end of a torn append, and hold nothing.)
    if written_end == file_length || (!last && at >= file_length) {
        segment.length = file_length;
        return Ok((segment, Ending::Clean));
    }
    if !last {
        return Err(corrupt(
            path,
            at,
            "batch checksum mismatch in a segment that is not the last one",
        ));
    }
    check_torn_tail(bytes, written_end, segment.end(), salt)
        .map_err(|error| corrupt(path, error.offset, error.reason))?;
    segment.length = written_end;
    Ok((segment, Ending::TornAt(written_end)))
}

/// Decodes the records of one valid batch (`range` of `bytes`) into `entries`.
fn read_batch_records(
    path: &Path,
    bytes: &Bytes,
    range: std::ops::Range<usize>,
    segment: &mut Segment,
    entries: &mut Vec<LogEntry<Bytes>>,
) -> Result<(), DiskError> {
    let mut record_at = range.start;
    while record_at < range.end {
        let expected = LogIndex::new(segment.first.get() + segment.offsets.len() as u64);
        match decode_record(&bytes.slice(record_at..range.end)) {
            Record::Entry(entry, record_length) if entry.index == expected => {
                segment.offsets.push(record_at as u64);
                entries.push(entry);
                record_at += record_length;
            }
            Record::Entry(entry, _) => {
                return Err(corrupt(
                    path,
                    record_at as u64,
                    format!(
                        "record holds index {}, expected {}",
                        entry.index.get(),
                        expected.get()
                    ),
                ));
            }
            Record::Incomplete => {
                return Err(corrupt(
                    path,
                    record_at as u64,
                    "record runs past its batch",
                ));
            }
            Record::Bad(reason) => return Err(corrupt(path, record_at as u64, reason)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use yggr_core::EntryPayload;

    use super::super::format::BATCH_ALIGN;
    use super::*;

    fn entries(range: std::ops::RangeInclusive<u64>) -> Vec<LogEntry<Bytes>> {
        range
            .map(|index| LogEntry {
                index: LogIndex::new(index),
                term: Term::new(1),
                payload: EntryPayload::Command(Bytes::from(vec![index as u8; 40])),
            })
            .collect()
    }

    fn indexes(entries: &[LogEntry<Bytes>]) -> Vec<u64> {
        entries.iter().map(|entry| entry.index.get()).collect()
    }

    /// The state `cut_segment` leaves if a crash strikes after it rewrote the cut batch's
    /// header but before the file was cut: recovery keeps the shortened batch and cuts the
    /// stale bytes after it as a torn tail.
    #[test]
    fn a_crash_between_the_header_rewrite_and_the_cut_recovers_the_kept_records() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        log.append(&entries(1..=3)).unwrap();
        log.append(&entries(4..=8)).unwrap();
        let segment = &log.segments[0];
        let (batch_start, first_record) = segment.batches[1];
        assert_eq!(first_record, 3);
        // Keep 4 and 5 of the second batch: rewrite its header, do not cut.
        let keep_until = segment.offsets[5];
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&segment.path)
            .unwrap();
        let records_start = batch_start + BATCH_HEADER_BYTES as u64;
        let mut kept = vec![0; (keep_until - records_start) as usize];
        file.read_exact_at(&mut kept, records_start).unwrap();
        let place = BatchPlace {
            salt: segment.salt,
            offset: batch_start,
        };
        file.write_all_at(&batch_header(&kept, place), batch_start)
            .unwrap();
        drop(file);
        drop(log);
        let (log, recovered) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&recovered), vec![1, 2, 3, 4, 5]);
        assert_eq!(log.next(), LogIndex::new(6));
    }

    /// The same crash when the cut batch was not the last: the cut first removed the later
    /// batches, keeping the zero padding that preceded the first of them. The records the
    /// shortened batch no longer covers, then that padding, are recognised as the cut's
    /// leftovers; anything else there is not.
    #[test]
    fn a_crash_inside_a_cut_of_an_earlier_batch_recovers_the_kept_records() {
        for leftover_damaged in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
            log.append(&entries(1..=3)).unwrap();
            log.append(&[entry_with(4, vec![4; 40]), entry_with(5, vec![5; 43])])
                .unwrap();
            log.append(&entries(6..=6)).unwrap();
            let segment = &log.segments[0];
            let (batch_start, _) = segment.batches[1];
            let (next_batch, _) = segment.batches[2];
            let keep_until = segment.offsets[4];
            let path = segment.path.clone();
            let place = BatchPlace {
                salt: segment.salt,
                offset: batch_start,
            };
            drop(log);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            file.set_len(next_batch).unwrap();
            let mut header = [0; BATCH_HEADER_BYTES];
            file.read_exact_at(&mut header, batch_start).unwrap();
            let records_length = u32::from_le_bytes(header[4..8].try_into().unwrap());
            let records_end = batch_start + BATCH_HEADER_BYTES as u64 + u64::from(records_length);
            assert!(records_end < next_batch, "the later batch follows padding");
            let mut padding = [0; BATCH_ALIGN as usize];
            file.read_exact_at(
                &mut padding[..(next_batch - records_end) as usize],
                records_end,
            )
            .unwrap();
            assert!(padding.iter().all(|byte| *byte == 0));
            let records_start = batch_start + BATCH_HEADER_BYTES as u64;
            let mut kept = vec![0; (keep_until - records_start) as usize];
            file.read_exact_at(&mut kept, records_start).unwrap();
            file.write_all_at(&batch_header(&kept, place), batch_start)
                .unwrap();
            if leftover_damaged {
                file.write_all_at(&[1], next_batch - 1).unwrap();
            }
            drop(file);
            match SegmentedLog::recover(dir.path(), 1 << 20) {
                Ok((_, recovered)) => {
                    assert!(!leftover_damaged);
                    assert_eq!(indexes(&recovered), vec![1, 2, 3, 4]);
                }
                Err(error) => assert!(leftover_damaged, "{error}"),
            }
        }
    }

    #[test]
    fn truncating_inside_a_batch_keeps_the_records_before_it_across_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        log.append(&entries(1..=3)).unwrap();
        log.append(&entries(4..=8)).unwrap();
        log.append(&entries(9..=9)).unwrap();
        log.truncate_from(LogIndex::new(6)).unwrap();
        log.append(&entries(6..=7)).unwrap();
        drop(log);
        let (_, recovered) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&recovered), (1..=7).collect::<Vec<_>>());
    }

    fn entry_with(index: u64, payload: Vec<u8>) -> LogEntry<Bytes> {
        LogEntry {
            index: LogIndex::new(index),
            term: Term::new(1),
            payload: EntryPayload::Command(Bytes::from(payload)),
        }
    }

    /// `cut_segment` rewrites a batch header in place, and a disk writes a 512-byte sector
    /// whole or not at all: a header that straddled two sectors could tear between them,
    /// leave a batch that checks out under neither header, and lose acknowledged records.
    /// So no batch header may straddle a sector, whatever the sizes of what came before.
    #[test]
    fn no_batch_header_straddles_a_sector() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        for index in 1..=600 {
            log.append(&[entry_with(index, vec![3; index as usize % 61])])
                .unwrap();
        }
        let segment = &log.segments[0];
        for (start, _) in &segment.batches {
            assert_eq!(
                start / 512,
                (start + BATCH_HEADER_BYTES as u64 - 1) / 512,
                "the batch header at {start} straddles a sector"
            );
        }
        // Truncating inside a batch that follows padding, then appending, reads back.
        log.append(&entries(601..=603)).unwrap();
        log.truncate_from(LogIndex::new(602)).unwrap();
        log.append(&entries(602..=602)).unwrap();
        drop(log);
        let (_, recovered) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&recovered), (1..=602).collect::<Vec<_>>());
    }

    /// A new segment's header is synced before its first batch is written, so a crash in
    /// the middle of that first append can lose the batch's first page but not the header:
    /// recovery cuts the batch as a torn tail and removes the segment, which holds nothing.
    #[test]
    fn a_new_segment_whose_first_batch_lost_its_first_page_is_cut_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        log.append(&[entry_with(1, vec![9; 9000])]).unwrap();
        let path = log.segments[0].path.clone();
        drop(log);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(
            &[0; 4096 - SEGMENT_HEADER_BYTES],
            SEGMENT_HEADER_BYTES as u64,
        )
        .unwrap();
        drop(file);
        let (mut log, recovered) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        assert!(recovered.is_empty());
        assert_eq!(
            log.segment_count(),
            0,
            "a segment with no entries is removed"
        );
        log.set_next_if_empty(LogIndex::new(1));
        assert_eq!(log.next(), LogIndex::new(1));
        log.append(&entries(1..=2)).unwrap();
        drop(log);
        let (_, recovered) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&recovered), vec![1, 2]);
    }

    /// A header that does not check out while later bytes do is not a crash (the header is
    /// synced before anything follows it): refused, naming the file.
    #[test]
    fn a_segment_whose_header_was_zeroed_under_written_data_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        log.append(&[entry_with(1, vec![9; 9000])]).unwrap();
        let path = log.segments[0].path.clone();
        drop(log);
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&[0; 4096], 0).unwrap();
        drop(file);
        let error = SegmentedLog::recover(dir.path(), 1 << 20).unwrap_err();
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
    }

    /// A torn last batch whose command bytes hold a whole batch (an application storing log
    /// or segment bytes, say) is cut as torn: the copy inside the payload is not at its own
    /// offset, so it does not pass for a batch a later append wrote — even when it carries
    /// this very segment's salt.
    #[test]
    fn a_torn_batch_whose_payload_holds_a_batch_is_cut_not_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        log.append(&entries(1..=1)).unwrap();
        let salt = log.segments[0].salt;
        let mut inner = vec![0u8; 5008];
        let start = start_batch(&mut inner);
        encode_record(&entries(1..=1)[0], &mut inner).unwrap();
        finish_batch(&mut inner, start, BatchPlace { salt, offset: 0 });
        log.append(&[entry_with(2, inner)]).unwrap();
        let segment = &log.segments[0];
        let (batch_start, _) = segment.batches[1];
        assert!(batch_start < 4096);
        let path = segment.path.clone();
        drop(log);
        // The crash lost the first page's copy of batch 2's start; later pages made it.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all_at(&vec![0; 4096 - batch_start as usize], batch_start)
            .unwrap();
        drop(file);
        let result = SegmentedLog::recover(dir.path(), 1 << 20);
        assert!(result.is_ok(), "refused: {:?}", result.err());
        assert_eq!(indexes(&result.unwrap().1), vec![1]);
    }

    /// A torn last batch whose header's sector never reached the disk, while later sectors
    /// did and hold batch magic at every boundary, each claiming to run to the end of the
    /// file, is cut (the scan's cost is checked in `format`). The same magic where the
    /// header's sector was written is corruption.
    #[test]
    fn a_torn_tail_of_forged_batch_headers_is_cut_and_forged_header_sector_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        log.append(&entries(1..=1)).unwrap();
        let path = log.segments[0].path.clone();
        drop(log);
        let mut bytes = fs::read(&path).unwrap();
        bytes.resize(align_batch(bytes.len() as u64) as usize, 0);
        let start = bytes.len();
        assert!(start < 512);
        bytes.resize(start + (64 << 10), 0);
        let forge_from = |bytes: &mut Vec<u8>, from: usize| {
            let mut at = from;
            while at + BATCH_HEADER_BYTES <= bytes.len() {
                let length = (bytes.len() - at - BATCH_HEADER_BYTES) as u32;
                bytes[at..at + 4].copy_from_slice(b"YBAT");
                bytes[at + 4..at + 8].copy_from_slice(&length.to_le_bytes());
                at += BATCH_ALIGN as usize;
            }
        };
        let mut torn = bytes.clone();
        forge_from(&mut torn, 512);
        std::fs::write(&path, &torn).unwrap();
        let (log, recovered) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&recovered), vec![1]);
        assert_eq!(log.next(), LogIndex::new(2));
        drop(log);
        forge_from(&mut bytes, start);
        std::fs::write(&path, &bytes).unwrap();
        let error = SegmentedLog::recover(dir.path(), 1 << 20).unwrap_err();
        assert!(
            matches!(error, DiskError::Corrupt { offset, .. } if offset == start as u64),
            "{error}"
        );
    }

    /// An append larger than a batch holds goes to disk as several batches, each whole, and
    /// reads back in order.
    #[test]
    fn an_append_larger_than_a_batch_is_split_into_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        log.batch_bytes_limit = 150;
        log.append(&entries(1..=10)).unwrap();
        let batches = log.segments[0].batches.len();
        assert!(batches >= 3, "{batches} batches");
        log.append(&entries(11..=12)).unwrap();
        log.truncate_from(LogIndex::new(6)).unwrap();
        drop(log);
        let (_, recovered) = SegmentedLog::recover(dir.path(), 1 << 20).unwrap();
        assert_eq!(indexes(&recovered), (1..=5).collect::<Vec<_>>());
    }

    /// The log never takes an entry it could not read back: one too large for a record is
    /// refused before anything of its batch is written, and what was stored before it reads
    /// back whole.
    #[test]
    fn an_entry_too_large_for_a_record_is_refused_before_it_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = SegmentedLog::recover(dir.path(), 1 << 30).unwrap();
        log.append(&entries(1..=1)).unwrap();
        let length = log.segments[0].length;
        let huge = entry_with(2, vec![7; super::super::format::MAX_RECORD_BYTES]);
        let error = log.append(&[huge]).unwrap_err();
        assert!(matches!(error, DiskError::Refused(_)), "{error}");
        assert_eq!(log.segments[0].length, length);
        assert_eq!(fs::file_len(&log.segments[0].path).unwrap(), length);
        drop(log);
        let (_, recovered) = SegmentedLog::recover(dir.path(), 1 << 30).unwrap();
        assert_eq!(indexes(&recovered), vec![1]);
    }
}
