//! How `DiskStorage::open` tells a torn tail from corruption, one test per rule of the
//! Recovery section of its module documentation. A crash can tear only the last batch of the
//! last segment, and only by leaving the file short or some of the batch's sectors unwritten
//! (all zeros); such a tail is cut and the open succeeds. Every other mismatch is corruption:
//! the open fails naming the file and the byte offset, and nothing on disk is changed.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use yggr::core::{EntryPayload, LogEntry, LogIndex, Term};
use yggr::{Bootstrap, DiskStorage, Storage, StorageWrite};

use crate::common::{Cluster, Recorder, eventually, id, test_config};
use crate::disk_storage::{corrupt_offset, entries, fresh, indexes, reopen, segments, snapshot};

/// The segment header's size, and the alignment and sector size batches are laid out by
/// (see the byte layout in `yggr::storage::disk::format`).
const SEGMENT_HEADER_BYTES: u64 = 32;
const BATCH_HEADER_BYTES: u64 = 16;
const BATCH_ALIGN: u64 = 16;
const SECTOR_BYTES: u64 = 512;

/// Entries `range` of term 1 whose commands are `size` bytes, none of them zero.
fn sized(range: std::ops::RangeInclusive<u64>, size: usize) -> StorageWrite {
    StorageWrite::Entries(
        range
            .map(|index| LogEntry {
                index: LogIndex::new(index),
                term: Term::new(1),
                payload: EntryPayload::Command(Bytes::from(vec![b'a' + (index % 26) as u8; size])),
            })
            .collect(),
    )
}

/// Where each batch of a one-segment log lies.
struct Layout {
    segment: PathBuf,
    /// The segment's length after each append: where batch `k` ends.
    ends: Vec<u64>,
}

impl Layout {
    /// The offset of batch `k`'s header (0-based).
    fn start(&self, k: usize) -> u64 {
        let previous = if k == 0 {
            SEGMENT_HEADER_BYTES
        } else {
            self.ends[k - 1]
        };
        previous.div_ceil(BATCH_ALIGN) * BATCH_ALIGN
    }

    fn last(&self) -> usize {
        self.ends.len() - 1
    }
}

/// A bootstrapped storage in `dir` holding `appends`, each one persist (one synced batch).
async fn store(dir: &Path, appends: Vec<StorageWrite>) -> Layout {
    let mut storage = fresh(dir).await;
    let mut ends = Vec::new();
    for append in appends {
        storage.persist(vec![append]).await.unwrap();
        let all = segments(dir);
        assert_eq!(all.len(), 1, "the test keeps one segment");
        ends.push(fs::metadata(&all[0]).unwrap().len());
    }
    Layout {
        segment: segments(dir)[0].clone(),
        ends,
    }
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
}

fn flip_bit(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x80;
    fs::write(path, bytes).unwrap();
}

/// Asserts that opening `dir` is refused as corruption of `segment` at `offset`, and that the
/// refusal changed nothing on disk (a second open is refused the same way).
async fn assert_refused_at(dir: &Path, segment: &Path, offset: u64) {
    let before = fs::read(segment).unwrap();
    for _ in 0..2 {
        let error = DiskStorage::open(dir).await.unwrap_err();
        let (path, at) = corrupt_offset(&error);
        assert_eq!(path, segment, "{error}");
        assert_eq!(at, offset, "{error}");
        assert!(
            error.to_string().contains(&segment.display().to_string()),
            "{error}"
        );
    }
    assert_eq!(
        fs::read(segment).unwrap(),
        before,
        "a refusal changed the file"
    );
}

/// Asserts that `dir` opens holding entries 1..=`kept` (term 1), with the segment cut back to
/// `length`, and that the log takes the next append.
async fn assert_cut_to(dir: &Path, segment: &Path, kept: u64, length: u64) {
    let state = reopen(dir).await;
    assert_eq!(
        indexes(&state),
        (1..=kept).map(|index| (index, 1)).collect::<Vec<_>>()
    );
    assert_eq!(fs::metadata(segment).unwrap().len(), length);
    let mut storage = DiskStorage::open(dir).await.unwrap();
    storage.load().await.unwrap();
    storage
        .persist(vec![entries(kept + 1..=kept + 1, 2)])
        .await
        .unwrap();
    drop(storage);
    assert_eq!(reopen(dir).await.log.len() as u64, kept + 1);
}

#[tokio::test]
async fn a_last_batch_the_file_ends_inside_is_torn_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let layout = store(dir.path(), vec![sized(1..=3, 100), sized(4..=6, 1000)]).await;
    let start = layout.start(1);
    let cut = start + (layout.ends[1] - start) / 2;
    OpenOptions::new()
        .write(true)
        .open(&layout.segment)
        .unwrap()
        .set_len(cut)
        .unwrap();
    assert_cut_to(dir.path(), &layout.segment, 3, layout.ends[0]).await;
}

#[tokio::test]
async fn a_zeroed_sector_inside_the_last_batch_is_torn_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let layout = store(dir.path(), vec![sized(1..=3, 100), sized(4..=6, 1000)]).await;
    // A whole sector in the middle of the batch: neither its first nor its last.
    let sector = (layout.start(1) / SECTOR_BYTES + 2) * SECTOR_BYTES;
    assert!(sector + SECTOR_BYTES < layout.ends[1]);
    overwrite(&layout.segment, sector, &[0; SECTOR_BYTES as usize]);
    assert_cut_to(dir.path(), &layout.segment, 3, layout.ends[0]).await;
}

/// The state a crash leaves when the file's new length reached the disk and none of the
/// append's data did.
#[tokio::test]
async fn a_last_batch_that_reads_all_zeros_is_torn_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let layout = store(dir.path(), vec![sized(1..=3, 100), sized(4..=6, 1000)]).await;
    let start = layout.start(1);
    overwrite(
        &layout.segment,
        start,
        &vec![0; (layout.ends[1] - start) as usize],
    );
    assert_cut_to(dir.path(), &layout.segment, 3, layout.ends[0]).await;
}

/// A full-length last batch whose checksum fails and that has no all-zero sector was written
/// whole: a flipped bit, in its header or its records, is corruption.
#[tokio::test]
async fn a_bit_flip_in_the_last_batch_is_refused_as_corruption() {
    for place in ["header", "middle", "last byte"] {
        let dir = tempfile::tempdir().unwrap();
        let layout = store(dir.path(), vec![sized(1..=3, 100), sized(4..=6, 300)]).await;
        let start = layout.start(1);
        let end = layout.ends[1];
        let offset = match place {
            "header" => start + 5,
            "middle" => start + (end - start) / 2,
            _ => end - 1,
        };
        flip_bit(&layout.segment, offset);
        assert_refused_at(dir.path(), &layout.segment, start).await;
    }
}

/// The zero padding between batches carries no checksum, so a byte changed there was accepted
/// in silence. Both batches around it are whole, so nothing a crash leaves explains it: it is
/// refused, naming where the padding starts.
#[tokio::test]
async fn a_changed_byte_in_the_padding_between_batches_is_refused_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    // 3 entries of 100 bytes end off the 16-byte grid, so padding precedes the second batch.
    let layout = store(
        dir.path(),
        vec![sized(1..=3, 100), sized(4..=6, 100), sized(7..=7, 100)],
    )
    .await;
    let padding_start = layout.ends[0];
    assert!(padding_start < layout.start(1), "the layout has padding");
    overwrite(&layout.segment, padding_start, &[1]);
    assert_refused_at(dir.path(), &layout.segment, padding_start).await;
}

/// Review finding: a last batch holds sector chunks that read all zeros although they were
/// written and synced whenever its commands hold zeros of their own. The commonest case is
/// the batch's last chunk: a batch that ends a few bytes past a sector boundary ends with the
/// last command's final bytes, and a command that is an integer in little-endian (as the test
/// state machine's are) ends in zeros. A flipped bit anywhere else in that batch, here in its
/// first record's checksum, is then taken for a torn append, and the synced (acknowledged)
/// entries 4..=6 are cut: `check_torn_tail` asks only whether some chunk of the batch reads all
/// zeros, not whether that chunk lies in a record that fails its own checksum (an unwritten
/// sector fails the record holding it; these records all check out).
#[tokio::test]
async fn a_bit_flip_in_a_last_batch_whose_commands_end_in_zeros_is_refused_as_corruption() {
    // Little-endian integers, as `Recorder` encodes its commands.
    let integers = || {
        StorageWrite::Entries(
            (4..=6)
                .map(|index| LogEntry {
                    index: LogIndex::new(index),
                    term: Term::new(1),
                    payload: EntryPayload::Command(Bytes::from(index.to_le_bytes().to_vec())),
                })
                .collect(),
        )
    };
    // Pad the first batch until the second ends just past a sector boundary, so that the
    // file's last sector holds only the last command's trailing zeros.
    for size in 100..600 {
        let dir = tempfile::tempdir().unwrap();
        let layout = store(dir.path(), vec![sized(1..=3, size), integers()]).await;
        let end = layout.ends[1];
        let bytes = fs::read(&layout.segment).unwrap();
        let last_chunk = &bytes[(end / SECTOR_BYTES * SECTOR_BYTES) as usize..];
        if last_chunk.is_empty() || last_chunk.iter().any(|byte| *byte != 0) {
            continue;
        }
        let start = layout.start(1);
        // The first record's checksum: after the batch header and the record's length.
        flip_bit(&layout.segment, start + BATCH_HEADER_BYTES + 4);
        let copy = fs::read(&layout.segment).unwrap();
        if let Ok(mut storage) = DiskStorage::open(dir.path()).await {
            let state = storage.load().await.unwrap().unwrap();
            panic!(
                "the open took the corruption for a torn write and cut the synced entries: \
                 the log holds {:?}",
                indexes(&state)
            );
        }
        assert_eq!(fs::read(&layout.segment).unwrap(), copy);
        assert_refused_at(dir.path(), &layout.segment, start).await;
        return;
    }
    panic!("no first-batch size put the second batch's end just past a sector boundary");
}

/// The reviewers' reproduction: the last bytes of a synced, acknowledged batch zeroed. The
/// zeros cover no whole sector of the batch (the file's last sector holds more of it than
/// they do), so no crash can have left them.
#[tokio::test]
async fn a_synced_last_batch_with_its_final_bytes_zeroed_is_refused_as_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let layout = store(dir.path(), vec![sized(1..=3, 100), sized(4..=6, 300)]).await;
    let end = layout.ends[1];
    assert!(
        end % SECTOR_BYTES == 0 || end % SECTOR_BYTES > 7,
        "the batch's last sector holds more than the zeroed bytes"
    );
    overwrite(&layout.segment, end - 7, &[0; 7]);
    assert_refused_at(dir.path(), &layout.segment, layout.start(1)).await;
}

/// A segment's header and directory entry are synced before any batch goes in, so a crash
/// can leave at most a header's worth of zeros. A longer all-zero segment held synced batches.
#[tokio::test]
async fn an_all_zero_segment_longer_than_a_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let appends = (0..10)
        .map(|k| entries(k * 10 + 1..=k * 10 + 10, 1))
        .collect();
    let layout = store(dir.path(), appends).await;
    let length = layout.ends[layout.last()];
    fs::write(&layout.segment, vec![0; length as usize]).unwrap();
    assert_refused_at(dir.path(), &layout.segment, 0).await;
    assert!(layout.segment.exists());
}

/// A batch whose header checks out says how long it is: bytes after its end were written by
/// a later append, which starts only once this batch is synced. So zeros that run from inside
/// one batch over later ones are corruption, wherever in the batch they start.
#[tokio::test]
async fn zeros_spanning_several_synced_batches_are_refused() {
    for from in ["after the header", "inside the records"] {
        let dir = tempfile::tempdir().unwrap();
        let appends = (0..5).map(|k| sized(k * 4 + 1..=k * 4 + 4, 200)).collect();
        let layout = store(dir.path(), appends).await;
        let start = layout.start(1);
        let zeroed_from = match from {
            "after the header" => start + BATCH_HEADER_BYTES,
            _ => start + (layout.ends[1] - start) / 2,
        };
        let end = layout.ends[layout.last()];
        overwrite(
            &layout.segment,
            zeroed_from,
            &vec![0; (end - zeroed_from) as usize],
        );
        assert_refused_at(dir.path(), &layout.segment, start).await;
    }
}

/// What a crash while a segment is created can leave: the file exists but its header, which
/// is synced before any batch is written, is missing, partly written, unwritten (zeros), or
/// whole with no batch after it. None of these hold an entry: the file is removed, and the
/// log goes on from the segment before it.
#[tokio::test]
async fn a_segment_file_a_crash_left_at_creation_is_removed() {
    for leftover in [
        "empty",
        "part of a header",
        "a header of zeros",
        "a header only",
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut storage = fresh(dir.path()).await.with_segment_bytes(64);
            storage.persist(vec![entries(1..=3, 1)]).await.unwrap();
            storage.persist(vec![entries(4..=5, 1)]).await.unwrap();
        }
        let all = segments(dir.path());
        assert_eq!(all.len(), 2);
        let created = &all[1];
        let header = fs::read(created).unwrap()[..SEGMENT_HEADER_BYTES as usize].to_vec();
        let contents = match leftover {
            "empty" => Vec::new(),
            "part of a header" => header[..20].to_vec(),
            "a header of zeros" => vec![0; SEGMENT_HEADER_BYTES as usize],
            _ => header,
        };
        fs::write(created, contents).unwrap();
        let state = reopen(dir.path()).await;
        assert_eq!(indexes(&state), vec![(1, 1), (2, 1), (3, 1)], "{leftover}");
        assert!(!created.exists(), "{leftover}: the leftover segment stays");
        let mut storage = DiskStorage::open(dir.path()).await.unwrap();
        storage.load().await.unwrap();
        storage.persist(vec![entries(4..=5, 2)]).await.unwrap();
        drop(storage);
        assert_eq!(
            indexes(&reopen(dir.path()).await),
            vec![(1, 1), (2, 1), (3, 1), (4, 2), (5, 2)]
        );
    }
}

/// A header lies inside one sector, which a disk writes whole or not at all: a header-sized
/// file whose header was written but does not check out is corruption, not a crash.
#[tokio::test]
async fn a_header_sized_last_segment_with_a_damaged_header_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await.with_segment_bytes(64);
        storage.persist(vec![entries(1..=3, 1)]).await.unwrap();
        storage.persist(vec![entries(4..=5, 1)]).await.unwrap();
    }
    let created = segments(dir.path())[1].clone();
    OpenOptions::new()
        .write(true)
        .open(&created)
        .unwrap()
        .set_len(SEGMENT_HEADER_BYTES)
        .unwrap();
    flip_bit(&created, 12);
    let (path, _) = corrupt_offset(&DiskStorage::open(dir.path()).await.unwrap_err());
    assert_eq!(path, created);
}

/// Earlier builds deleted a replaced log's segments oldest first when a snapshot that the log
/// does not continue was installed; a crash after the first deletion left a log that starts
/// past the snapshot. Everything in it came after an entry that conflicts with the snapshot,
/// so none of it can be committed: the open discards it and goes on after the snapshot.
#[tokio::test]
async fn a_log_left_starting_past_the_snapshot_by_an_interrupted_install_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let kept: Vec<(PathBuf, Vec<u8>)>;
    {
        let mut storage = fresh(dir.path()).await.with_segment_bytes(64);
        for first in [1, 4, 7, 10] {
            storage
                .persist(vec![entries(first..=first + 2, 1)])
                .await
                .unwrap();
        }
        let all = segments(dir.path());
        assert_eq!(all.len(), 4);
        kept = all[1..]
            .iter()
            .map(|path| (path.clone(), fs::read(path).unwrap()))
            .collect();
        // Entry 2 has term 1: a snapshot at 2 of term 2 does not continue the log.
        storage.persist(vec![snapshot(2, 2)]).await.unwrap();
    }
    assert!(segments(dir.path()).is_empty());
    for (path, bytes) in &kept {
        fs::write(path, bytes).unwrap();
    }
    let mut storage = DiskStorage::open(dir.path()).await.unwrap();
    let state = storage.load().await.unwrap().unwrap();
    let floor = state.snapshot.as_ref().unwrap().last_included_index;
    assert_eq!(floor, LogIndex::new(2));
    assert!(state.log.is_empty(), "{:?}", indexes(&state));
    storage.persist(vec![entries(3..=4, 2)]).await.unwrap();
    drop(storage);
    assert_eq!(indexes(&reopen(dir.path()).await), vec![(3, 2), (4, 2)]);
}

/// A node's storage in `dir` started as a joiner on `network`: it waits to be added.
async fn start_joiner_on_disk(
    network: &yggr::LocalNetwork,
    dir: &Path,
) -> (yggr::Node<Recorder>, Arc<Mutex<Vec<u64>>>) {
    start_on_disk(network, dir, Bootstrap::Join).await
}

/// Node 3 over the storage in `dir`, started with `bootstrap` on `network`.
async fn start_on_disk(
    network: &yggr::LocalNetwork,
    dir: &Path,
    bootstrap: Bootstrap,
) -> (yggr::Node<Recorder>, Arc<Mutex<Vec<u64>>>) {
    let recorder = Recorder::default();
    let applied = Arc::clone(&recorder.mirror);
    let mut config = test_config(id(3), []);
    config.bootstrap = bootstrap;
    let storage = DiskStorage::open(dir).await.unwrap();
    let node = yggr::Node::start(config, recorder, storage, network.transport(id(3)))
        .await
        .unwrap();
    (node, applied)
}

async fn wait_until_applied(applied: &Arc<Mutex<Vec<u64>>>, commands: &[u64]) {
    eventually(Duration::from_secs(20), || async {
        let applied = applied.lock().unwrap();
        commands
            .iter()
            .all(|command| applied.contains(command))
            .then_some(())
    })
    .await
    .expect("the node applies every write");
}

/// The recovery the module documentation and the Operations chapter prescribe after a
/// refused open, carried out: the damaged directory is moved aside, the leader removes the
/// node, the node starts again with the same id over a fresh directory as a joiner, and the
/// leader adds it back as a learner and promotes it once it has caught up. Real time: the
/// storage's files are not on tokio's paused clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_storage_is_refused_rejoins_after_removal_with_a_fresh_directory() {
    let cluster = Cluster::start(2, |_| {}).await;
    let leader = cluster.leader().await;
    let admin = leader.admin();
    cluster.write(1).await;
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("node-3");
    let (node, applied) = start_joiner_on_disk(&cluster.network, &data).await;
    admin.add_learner(id(3)).await.unwrap();
    wait_until_applied(&applied, &[1]).await;
    admin.promote_learner(id(3)).await.unwrap();
    cluster.write(2).await;
    wait_until_applied(&applied, &[2]).await;
    node.shutdown().await.unwrap();

    // A flipped bit in the last batch of node 3's newest segment.
    let newest = segments(&data).pop().unwrap();
    let mut bytes = fs::read(&newest).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= if bytes[last] == 0x80 { 0x01 } else { 0x80 };
    fs::write(&newest, bytes).unwrap();
    let (path, _) = corrupt_offset(&DiskStorage::open(&data).await.unwrap_err());
    assert_eq!(path, newest);

    fs::rename(&data, root.path().join("node-3.damaged")).unwrap();
    admin.remove_peer(id(3)).await.unwrap();
    cluster.write(3).await;
    let (node, applied) = start_joiner_on_disk(&cluster.network, &data).await;
    admin.add_learner(id(3)).await.unwrap();
    wait_until_applied(&applied, &[1, 2, 3]).await;
    admin.promote_learner(id(3)).await.unwrap();
    cluster.write(4).await;
    wait_until_applied(&applied, &[4]).await;
    let voters = leader.status().await.unwrap().membership.voters;
    assert!(voters.contains(&id(3)), "{voters:?}");
    node.shutdown().await.unwrap();
    cluster.shutdown().await;
}

/// The one kind of damage recovery cannot see: a whole sector of the last, synced and
/// acknowledged batch reads as zeros, exactly what a torn append leaves, so the open cuts it.
/// The follower then holds less than the leader counts as matched, and refuses every
/// AppendEntries anchored there. It must not stall: the leader takes the refusal at the match
/// point as lost entries and replicates them again. Real time: the files are not on tokio's
/// paused clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_acknowledged_tail_was_cut_as_torn_catches_up_again() {
    let cluster = Cluster::start(2, |_| {}).await;
    let leader = cluster.leader().await;
    let admin = leader.admin();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("node-3");
    let (node, applied) = start_joiner_on_disk(&cluster.network, &data).await;
    admin.add_learner(id(3)).await.unwrap();
    admin.promote_learner(id(3)).await.unwrap();
    cluster.write(1).await;
    wait_until_applied(&applied, &[1]).await;
    // One batch of 200 commands: the follower stores it as one record spanning sectors.
    let batch: Vec<u64> = (100..300).collect();
    leader.write_batch(batch.clone()).await.unwrap();
    wait_until_applied(&applied, &batch).await;
    node.shutdown().await.unwrap();

    let held_before = reopen(&data).await.log.len();
    let newest = segments(&data).pop().unwrap();
    let length = fs::metadata(&newest).unwrap().len();
    let sector = (length / SECTOR_BYTES - 1) * SECTOR_BYTES;
    overwrite(&newest, sector, &[0; SECTOR_BYTES as usize]);
    let held_after = reopen(&data).await.log.len();
    assert!(
        held_after < held_before,
        "the zeroed sector lies in the last batch and the open cuts it as torn \
         ({held_after} entries held, {held_before} before)"
    );

    let (node, applied) = start_on_disk(&cluster.network, &data, Bootstrap::Recover).await;
    cluster.write(2).await;
    let mut expected = batch;
    expected.extend([1, 2]);
    wait_until_applied(&applied, &expected).await;
    let metrics = leader.metrics().await.unwrap();
    assert!(metrics.followers_lost_acknowledged >= 1, "{metrics:?}");
    node.shutdown().await.unwrap();
    cluster.shutdown().await;
}
