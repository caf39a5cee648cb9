//! DiskStorage on its own: what it stores reads back after a reopen, a torn tail is repaired,
//! corruption anywhere else is refused with the file and offset, and a failed write poisons it.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use yggr::core::{EntryPayload, LogEntry, LogIndex, Membership, RecoveredSnapshot, Term};
use yggr::{DiskError, DiskStorage, Storage, StorageWrite, StoredState};

use crate::common::id;

pub(crate) fn entry(index: u64, term: u64) -> LogEntry<Bytes> {
    LogEntry {
        index: LogIndex::new(index),
        term: Term::new(term),
        payload: EntryPayload::Command(Bytes::from(format!("command {index}/{term}"))),
    }
}

pub(crate) fn entries(range: std::ops::RangeInclusive<u64>, term: u64) -> StorageWrite {
    StorageWrite::Entries(range.map(|index| entry(index, term)).collect())
}

pub(crate) fn snapshot(index: u64, term: u64) -> StorageWrite {
    StorageWrite::Snapshot(RecoveredSnapshot {
        last_included_index: LogIndex::new(index),
        last_included_term: Term::new(term),
        membership: Membership::from_voters([id(1), id(2)]),
        bytes: Bytes::from(format!("state through {index}")),
    })
}

pub(crate) fn founding() -> Membership {
    Membership::from_voters([id(1), id(2), id(3)])
}

pub(crate) async fn fresh(dir: &Path) -> DiskStorage {
    let mut storage = DiskStorage::open(dir).await.unwrap();
    assert_eq!(storage.load().await.unwrap(), None);
    storage
        .bootstrap(yggr::NodeId::new(1).unwrap(), &founding())
        .await
        .unwrap();
    storage
}

pub(crate) async fn reopen(dir: &Path) -> StoredState {
    DiskStorage::open(dir)
        .await
        .unwrap()
        .load()
        .await
        .unwrap()
        .expect("bootstrapped storage")
}

pub(crate) fn indexes(state: &StoredState) -> Vec<(u64, u64)> {
    state
        .log
        .iter()
        .map(|entry| (entry.index.get(), entry.term.get()))
        .collect()
}

pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    paths
}

pub(crate) fn corrupt_offset(error: &std::io::Error) -> (PathBuf, u64) {
    assert_eq!(error.kind(), ErrorKind::InvalidData, "{error}");
    let inner = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<DiskError>())
        .unwrap_or_else(|| panic!("not a DiskError: {error}"));
    match inner {
        DiskError::Corrupt { path, offset, .. } => (path.clone(), *offset),
        other => panic!("not a corruption error: {other}"),
    }
}

#[tokio::test]
async fn everything_stored_reads_back_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage
            .persist(vec![
                StorageWrite::HardState {
                    current_term: Term::new(3),
                    voted_for: Some(id(2)),
                },
                entries(1..=5, 3),
            ])
            .await
            .unwrap();
    }
    let state = reopen(dir.path()).await;
    assert_eq!(state.founding, founding());
    assert_eq!(state.current_term, Term::new(3));
    assert_eq!(state.voted_for, Some(id(2)));
    assert_eq!(state.log, (1..=5).map(|i| entry(i, 3)).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_conflicting_suffix_is_truncated_in_place() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage.persist(vec![entries(1..=10, 1)]).await.unwrap();
        let before = fs::metadata(&segments(dir.path())[0]).unwrap().len();
        storage.persist(vec![entries(6..=7, 2)]).await.unwrap();
        let after = fs::metadata(&segments(dir.path())[0]).unwrap().len();
        assert!(after < before, "the file was cut, not rewritten larger");
        // Two writes in one batch, the second overlapping the first: merged, in order.
        storage
            .persist(vec![entries(8..=9, 2), entries(9..=9, 3)])
            .await
            .unwrap();
    }
    let state = reopen(dir.path()).await;
    let mut expected: Vec<(u64, u64)> = (1..=5).map(|i| (i, 1)).collect();
    expected.extend([(6, 2), (7, 2), (8, 2), (9, 3)]);
    assert_eq!(indexes(&state), expected);
}

#[tokio::test]
async fn segments_rotate_and_compaction_deletes_whole_ones_across_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await.with_segment_bytes(200);
        for first in (1..=40).step_by(4) {
            storage
                .persist(vec![entries(first..=first + 3, 1)])
                .await
                .unwrap();
        }
        let count = storage.segment_count();
        assert!(count >= 5, "{count} segments");
        // A truncation that crosses a segment boundary removes the later files.
        storage.persist(vec![entries(15..=15, 2)]).await.unwrap();
        assert!(storage.segment_count() < count);
        storage.persist(vec![entries(16..=30, 2)]).await.unwrap();
        // A snapshot in the middle of a segment: whole segments below it go, its own stays.
        storage.persist(vec![snapshot(22, 2)]).await.unwrap();
        // Their files are removed in the background, after the persist returned.
        let log = dir.path().join("log");
        crate::common::eventually(std::time::Duration::from_secs(10), || async {
            let left = fs::read_dir(&log)
                .unwrap()
                .filter(|entry| {
                    let name = entry.as_ref().unwrap().file_name();
                    !name.to_string_lossy().ends_with(".seg")
                })
                .count();
            (left == 0).then_some(())
        })
        .await
        .expect("the retired segment files are removed");
    }
    let names = segments(dir.path());
    let first_name = names[0].file_stem().unwrap().to_str().unwrap().to_string();
    let first_index: u64 = first_name.parse().unwrap();
    assert!(
        first_index <= 23 && first_index > 1,
        "first segment {first_name}"
    );
    let state = reopen(dir.path()).await;
    assert_eq!(
        state.snapshot.as_ref().unwrap().last_included_index,
        LogIndex::new(22)
    );
    assert_eq!(
        indexes(&state),
        (23..=30).map(|i| (i, 2)).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_snapshot_that_does_not_continue_the_log_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage.persist(vec![entries(1..=5, 1)]).await.unwrap();
        // The leader's snapshot ends past our log: nothing of ours survives.
        storage
            .persist(vec![snapshot(50, 4), entries(51..=52, 4)])
            .await
            .unwrap();
    }
    let state = reopen(dir.path()).await;
    assert_eq!(
        state.snapshot.as_ref().unwrap().last_included_index,
        LogIndex::new(50)
    );
    assert_eq!(indexes(&state), vec![(51, 4), (52, 4)]);
}

#[tokio::test]
async fn the_node_id_recorded_at_bootstrap_is_loaded_back() {
    let dir = tempfile::tempdir().unwrap();
    assert!(!DiskStorage::open(dir.path()).await.unwrap().holds_state());
    drop(fresh(dir.path()).await);
    let mut storage = DiskStorage::open(dir.path()).await.unwrap();
    assert!(storage.holds_state());
    let state = storage.load().await.unwrap().unwrap();
    assert_eq!(state.node_id, Some(yggr::NodeId::new(1).unwrap()));
    assert_eq!(state.founding, founding());
}

#[tokio::test]
async fn a_torn_record_at_the_tail_is_cut_off_and_the_open_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage.persist(vec![entries(1..=3, 1)]).await.unwrap();
    }
    let segment = segments(dir.path())[0].clone();
    let whole = fs::metadata(&segment).unwrap().len();
    // Half a record: a crash in the middle of an append.
    let mut file = OpenOptions::new().append(true).open(&segment).unwrap();
    file.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
    drop(file);
    let state = reopen(dir.path()).await;
    assert_eq!(indexes(&state), vec![(1, 1), (2, 1), (3, 1)]);
    assert_eq!(fs::metadata(&segment).unwrap().len(), whole);
    // And the log goes on from there.
    let mut storage = DiskStorage::open(dir.path()).await.unwrap();
    storage.load().await.unwrap();
    storage.persist(vec![entries(4..=4, 1)]).await.unwrap();
    drop(storage);
    assert_eq!(reopen(dir.path()).await.log.len(), 4);
}

#[tokio::test]
async fn a_flipped_byte_in_the_middle_of_the_log_is_refused_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage.persist(vec![entries(1..=10, 1)]).await.unwrap();
        // A later batch: the first one was synced before it, so it cannot be a torn write.
        storage.persist(vec![entries(11..=12, 1)]).await.unwrap();
    }
    let segment = segments(dir.path())[0].clone();
    let mut bytes = fs::read(&segment).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x01;
    fs::write(&segment, &bytes).unwrap();
    let error = DiskStorage::open(dir.path()).await.unwrap_err();
    let (path, offset) = corrupt_offset(&error);
    assert_eq!(path, segment);
    // The offset of the batch holding the flipped byte: right after the segment header.
    assert_eq!(offset, 32, "{error}");
    assert!(error.to_string().contains(".seg"), "{error}");
}

#[tokio::test]
async fn a_flipped_byte_in_an_earlier_segment_is_refused_even_when_later_ones_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await.with_segment_bytes(100);
        for index in 1..=10 {
            storage
                .persist(vec![entries(index..=index, 1)])
                .await
                .unwrap();
        }
    }
    let all = segments(dir.path());
    assert!(all.len() > 2);
    // The last record of a segment that is not the last: not a torn tail.
    let victim = all[0].clone();
    let mut bytes = fs::read(&victim).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();
    let (path, _) = corrupt_offset(&DiskStorage::open(dir.path()).await.unwrap_err());
    assert_eq!(path, victim);
}

#[tokio::test]
async fn truncated_or_garbage_meta_and_hard_state_files_are_refused() {
    for (file, damage) in [
        ("meta", Damage::Truncate),
        ("meta", Damage::Garbage),
        ("hard_state", Damage::Truncate),
        ("hard_state", Damage::Garbage),
        ("snapshot", Damage::Truncate),
    ] {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut storage = fresh(dir.path()).await;
            storage
                .persist(vec![
                    StorageWrite::HardState {
                        current_term: Term::new(2),
                        voted_for: None,
                    },
                    entries(1..=3, 2),
                    snapshot(2, 2),
                ])
                .await
                .unwrap();
        }
        let path = dir.path().join(file);
        let bytes = fs::read(&path).unwrap();
        match damage {
            Damage::Truncate => fs::write(&path, &bytes[..bytes.len() / 2]).unwrap(),
            Damage::Garbage => fs::write(&path, b"not a yggr file at all").unwrap(),
        }
        let error = DiskStorage::open(dir.path()).await.unwrap_err();
        let (reported, _) = corrupt_offset(&error);
        assert_eq!(reported, path, "{file}: {error}");
    }
}

enum Damage {
    Truncate,
    Garbage,
}

#[tokio::test]
async fn state_without_a_meta_file_is_refused_rather_than_taken_for_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage.persist(vec![entries(1..=2, 1)]).await.unwrap();
    }
    fs::remove_file(dir.path().join("meta")).unwrap();
    let error = DiskStorage::open(dir.path()).await.unwrap_err();
    assert!(error.to_string().contains("meta"), "{error}");
}

#[tokio::test]
async fn stray_temporary_files_are_swept_on_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(fresh(dir.path()).await);
    fs::write(dir.path().join("hard_state.tmp"), b"half written").unwrap();
    fs::write(dir.path().join("snapshot.tmp"), b"half written").unwrap();
    reopen(dir.path()).await;
    assert!(!dir.path().join("hard_state.tmp").exists());
    assert!(!dir.path().join("snapshot.tmp").exists());
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = fresh(dir.path()).await;
    let error = DiskStorage::open(dir.path()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WouldBlock, "{error}");
}

#[tokio::test]
async fn after_a_failed_write_every_later_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = fresh(dir.path()).await;
    storage.persist(vec![entries(1..=2, 1)]).await.unwrap();
    // Take the directory away: replacing the hard state file fails.
    let moved = dir.path().with_extension("moved");
    fs::rename(dir.path(), &moved).unwrap();
    let failed = storage
        .persist(vec![StorageWrite::HardState {
            current_term: Term::new(2),
            voted_for: None,
        }])
        .await
        .unwrap_err();
    assert!(matches!(failed, DiskError::Io { .. }), "{failed}");
    // Give it back: the storage still refuses, because a failed sync cannot be retried.
    fs::rename(&moved, dir.path()).unwrap();
    let refused = storage.persist(vec![entries(3..=3, 1)]).await.unwrap_err();
    assert!(matches!(refused, DiskError::Poisoned { .. }), "{refused}");
}

#[tokio::test]
async fn entries_that_would_leave_a_gap_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = fresh(dir.path()).await;
    storage.persist(vec![entries(1..=2, 1)]).await.unwrap();
    let error = storage.persist(vec![entries(5..=6, 1)]).await.unwrap_err();
    assert!(matches!(error, DiskError::Refused(_)), "{error}");
}

mod model {
    //! Any sequence of appends, truncations, snapshots and reopens reads back what
    //! `MemStorage`, the model of the storage contract, holds after the same writes.

    use proptest::prelude::*;
    use yggr::MemStorage;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        /// Entries from `back` before the next index (0: a plain append), `count` of them.
        Entries {
            back: u64,
            count: u64,
            term: u64,
        },
        /// A snapshot `ahead` past the floor, with a term that may or may not match the log.
        Snapshot {
            ahead: u64,
            term: u64,
        },
        HardState {
            term: u64,
            vote: Option<u64>,
        },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            5 => (0..4u64, 1..6u64, 1..4u64)
                .prop_map(|(back, count, term)| Op::Entries { back, count, term }),
            1 => (1..12u64, 1..4u64).prop_map(|(ahead, term)| Op::Snapshot { ahead, term }),
            1 => (1..5u64, proptest::option::of(1..4u64))
                .prop_map(|(term, vote)| Op::HardState { term, vote }),
            1 => Just(Op::Reopen),
        ]
    }

    /// The write `op` stands for, given what the model holds.
    fn write_for(op: &Op, model: &StoredState) -> Option<StorageWrite> {
        let floor = model
            .snapshot
            .as_ref()
            .map_or(0, |snapshot| snapshot.last_included_index.get());
        let next = model
            .log
            .last()
            .map_or(floor + 1, |entry| entry.index.get() + 1);
        match *op {
            Op::Entries { back, count, term } => {
                let first = next.saturating_sub(back).max(floor + 1);
                Some(entries(first..=first + count - 1, term))
            }
            Op::Snapshot { ahead, term } => Some(snapshot(floor + ahead, term)),
            Op::HardState { term, vote } => Some(StorageWrite::HardState {
                current_term: Term::new(term),
                voted_for: vote.map(id),
            }),
            Op::Reopen => None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_sequence_of_writes_and_reopens_reads_back_what_the_model_holds(
            ops in proptest::collection::vec(op(), 1..30),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                let dir = tempfile::tempdir().unwrap();
                let mut disk = fresh(dir.path()).await.with_segment_bytes(160);
                let mut model = MemStorage::new();
                model.bootstrap(yggr::NodeId::new(1).unwrap(), &founding()).await.unwrap();
                for op in &ops {
                    let expected = model.load().await.unwrap().unwrap();
                    match write_for(op, &expected) {
                        Some(write) => {
                            disk.persist(vec![write.clone()]).await.unwrap();
                            model.persist(vec![write]).await.unwrap();
                        }
                        None => {
                            drop(disk);
                            disk = DiskStorage::open(dir.path()).await.unwrap().with_segment_bytes(160);
                            let stored = disk.load().await.unwrap().unwrap();
                            prop_assert_eq!(&stored, &expected);
                        }
                    }
                }
                drop(disk);
                let stored = reopen(dir.path()).await;
                prop_assert_eq!(stored, model.load().await.unwrap().unwrap());
                Ok(())
            })?;
        }
    }
}

#[tokio::test]
async fn a_segment_named_with_an_impossible_index_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage.persist(vec![entries(1..=2, 1)]).await.unwrap();
    }
    let hostile = dir.path().join("log").join("18446744073709551615.seg");
    fs::copy(&segments(dir.path())[0], &hostile).unwrap();
    let (path, _) = corrupt_offset(&DiskStorage::open(dir.path()).await.unwrap_err());
    assert_eq!(path, hostile);
}

/// Review: a crash can leave the last segment with a valid header and no batch (its creation
/// synced the header, then the first append was lost). If the log before it was compacted
/// away, recovery finds no entries but one (empty) segment, and `reconcile_log_with_snapshot`
/// calls `set_next_if_empty`, which does nothing while any segment exists. So when a crash
/// also strikes between writing a snapshot past the log and clearing the log (the state
/// `store_snapshot` documents as recoverable), the reopened storage keeps `next` at the empty
/// segment's first index, below the snapshot: the first append after the snapshot is refused
/// as a gap, which poisons the storage — and every restart lands in the same state, so the
/// node can never make progress again.
#[tokio::test]
async fn an_empty_segment_left_by_a_crash_does_not_block_appends_after_a_snapshot_past_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(dir.path()).await;
        storage.persist(vec![entries(1..=3, 1)]).await.unwrap();
        // Compaction removes the only segment: the log is empty, the next append at 4.
        storage.persist(vec![snapshot(3, 1)]).await.unwrap();
        storage.persist(vec![entries(4..=5, 1)]).await.unwrap();
    }
    let all = segments(dir.path());
    assert_eq!(all.len(), 1);
    assert!(all[0].ends_with("00000000000000000004.seg"));
    // Crash one: the new segment's header was synced, its first batch never reached the disk.
    OpenOptions::new()
        .write(true)
        .open(&all[0])
        .unwrap()
        .set_len(32)
        .unwrap();
    // Crash two, after a reopen: a snapshot at 200 arrives; `store_snapshot` replaced the
    // snapshot file and crashed before clearing the log. (The snapshot file's bytes are taken
    // from a storage that stored the same snapshot.)
    let other = tempfile::tempdir().unwrap();
    {
        let mut storage = fresh(other.path()).await;
        storage.persist(vec![snapshot(200, 2)]).await.unwrap();
    }
    fs::copy(other.path().join("snapshot"), dir.path().join("snapshot")).unwrap();
    let mut storage = DiskStorage::open(dir.path()).await.unwrap();
    let state = storage.load().await.unwrap().unwrap();
    assert_eq!(
        state.snapshot.as_ref().unwrap().last_included_index,
        LogIndex::new(200)
    );
    assert!(state.log.is_empty());
    // The engine goes on right after the snapshot.
    storage
        .persist(vec![entries(201..=202, 2)])
        .await
        .expect("the first append after the snapshot is accepted");
    drop(storage);
    assert_eq!(indexes(&reopen(dir.path()).await), vec![(201, 2), (202, 2)]);
}

/// The incarnation names the data, not the process: a reopen of the same directory keeps
/// it, and a wiped directory bootstrapped again gets another one.
#[tokio::test]
async fn the_incarnation_survives_a_reopen_and_a_wiped_directory_gets_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = fresh(dir.path()).await;
    let incarnation = storage.incarnation().expect("bootstrapped storage has one");
    assert_ne!(incarnation, 0);
    storage.persist(vec![entries(1..=3, 1)]).await.unwrap();
    drop(storage);
    let mut reopened = DiskStorage::open(dir.path()).await.unwrap();
    assert_eq!(reopened.incarnation(), Some(incarnation));
    reopened
        .load()
        .await
        .unwrap()
        .expect("bootstrapped storage");
    assert_eq!(reopened.incarnation(), Some(incarnation));
    drop(reopened);

    fs::remove_dir_all(dir.path()).unwrap();
    let mut wiped = DiskStorage::open(dir.path()).await.unwrap();
    assert_eq!(wiped.incarnation(), None);
    wiped.bootstrap(id(1), &founding()).await.unwrap();
    // Two draws of 64 random bits: equal with probability 2^-64.
    assert_ne!(wiped.incarnation(), Some(incarnation));
}
