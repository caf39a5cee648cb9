//! Bugs an outside review proved in DiskStorage, TcpTransport and the leader's write overlap,
//! one test each: a lone voter's early AppendEntries must not carry a commit index no disk
//! backs; a removed or moved peer gets nothing more at its old address; an empty last segment
//! takes the next append; a crash that leaves an unwritten page inside an unacknowledged
//! batch must not stop the node from opening.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use yggr::core::{EntryPayload, LogEntry, LogIndex, Membership, Message, Rpc, Term, VoteResponse};
use yggr::{
    Bootstrap, DiskStorage, LocalNetwork, MemStorage, Node, Storage, StorageWrite, TcpTransport,
    Transport,
};

use crate::common::*;

// ---------------------------------------------------------------------------------------
// Driver: a lone voter commits on its own append, so the "early" AppendEntries carry a
// leader_commit covering entries that are not yet durable anywhere but on the learner.
// ---------------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_lone_voters_learner_never_applies_an_entry_the_voter_has_not_made_durable() {
    let network = LocalNetwork::new();
    let storage = FaultyStorage::default();
    let leader = lone_leader(&network, Recorder::default(), storage.clone(), |_| {}).await;

    let learner_recorder = Recorder::default();
    let learner_applied = Arc::clone(&learner_recorder.mirror);
    let mut learner_config = test_config(id(2), []);
    learner_config.bootstrap = Bootstrap::Join;
    let learner = Node::start(
        learner_config,
        learner_recorder,
        MemStorage::default(),
        network.transport(id(2)),
    )
    .await
    .unwrap();
    leader.admin().add_learner(id(2)).await.unwrap();
    leader.write(1).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (learner_applied.lock().unwrap().contains(&1)).then_some(())
    })
    .await
    .expect("the learner catches up");

    // The leader's write of entry "100" stalls in its fsync.
    storage.faults.hold_entries();
    let write = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(100).await }
    });
    let applied_early = eventually(Duration::from_secs(5), || async {
        (learner_applied.lock().unwrap().contains(&100)).then_some(())
    })
    .await;
    let on_leader_disk = storage
        .inner
        .clone()
        .load()
        .await
        .unwrap()
        .unwrap()
        .log
        .iter()
        .any(|entry| {
            entry.payload == EntryPayload::Command(Bytes::from(100u64.to_le_bytes().to_vec()))
        });
    assert!(
        applied_early.is_none(),
        "the learner APPLIED command 100 while it is not durable on the only voter \
         (on the leader's disk: {on_leader_disk})"
    );
    // (Not reached while the bug exists.) Crash the leader before its fsync.
    // The held write is lost: the process "crashed" before its fsync.
    storage.faults.release(true);
    let _ = write.await;
    let _ = learner.shutdown().await;
}

/// Same as above, carried through: the leader crashes before its fsync, restarts, and
/// writes something else at that index; the learner's state machine diverged.
#[tokio::test(start_paused = true)]
async fn a_lone_voter_crashing_before_its_fsync_leaves_learner_and_voter_in_agreement() {
    let network = LocalNetwork::new();
    let storage = FaultyStorage::default();
    let leader = lone_leader(&network, Recorder::default(), storage.clone(), |_| {}).await;
    let learner_recorder = Recorder::default();
    let learner_applied = Arc::clone(&learner_recorder.mirror);
    let mut learner_config = test_config(id(2), []);
    learner_config.bootstrap = Bootstrap::Join;
    let learner = Node::start(
        learner_config,
        learner_recorder,
        MemStorage::default(),
        network.transport(id(2)),
    )
    .await
    .unwrap();
    leader.admin().add_learner(id(2)).await.unwrap();
    leader.write(1).await.unwrap();
    eventually(Duration::from_secs(10), || async {
        (learner_applied.lock().unwrap().contains(&1)).then_some(())
    })
    .await
    .expect("the learner catches up");

    storage.faults.hold_entries();
    let write = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(100).await }
    });
    let _ = eventually(Duration::from_secs(5), || async {
        (learner_applied.lock().unwrap().contains(&100)).then_some(())
    })
    .await;
    // Crash: the stalled write never reaches the disk; the node stops.
    // The held write is lost: the process "crashed" before its fsync.
    storage.faults.release(true);
    assert!(
        write.await.unwrap().is_err(),
        "the client was not answered Ok"
    );
    let _ = leader.shutdown().await;

    // Restart from what the disk holds.
    let leader_recorder = Recorder::default();
    let leader_applied = Arc::clone(&leader_recorder.mirror);
    let mut config = test_config(id(1), []);
    config.bootstrap = Bootstrap::Recover;
    let leader = Node::start(
        config,
        leader_recorder,
        storage.inner.clone(),
        network.transport(id(1)),
    )
    .await
    .unwrap();
    eventually(Duration::from_secs(10), || async {
        (leader.current_leader() == Some(leader.id())).then_some(())
    })
    .await
    .expect("it leads again");
    eventually(Duration::from_secs(10), || async {
        leader.write(200).await.ok()
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let on_leader = leader_applied.lock().unwrap().clone();
    let on_learner = learner_applied.lock().unwrap().clone();
    let _ = learner.shutdown().await;
    let _ = leader.shutdown().await;
    assert!(
        on_learner.iter().all(|command| on_leader.contains(command)),
        "state machines diverged: leader applied {on_leader:?}, learner applied {on_learner:?}"
    );
}

// ---------------------------------------------------------------------------------------
// TcpTransport: the address book is not consulted once a writer is connected.
// ---------------------------------------------------------------------------------------

fn vote(from: u64) -> Message<Bytes> {
    Message {
        from: id(from),
        term: Term::new(1),
        rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    }
}

async fn recv_within(transport: &mut TcpTransport, limit: Duration) -> Option<Message<Bytes>> {
    tokio::time::timeout(limit, transport.recv())
        .await
        .ok()
        .flatten()
}

#[tokio::test]
async fn a_removed_peer_gets_nothing_more_on_its_open_connection() {
    let placeholder = "127.0.0.1:9".parse().unwrap();
    let mut b = TcpTransport::start(
        id(2),
        "127.0.0.1:0".parse().unwrap(),
        [(id(1), placeholder)],
    )
    .await
    .unwrap();
    let mut a = TcpTransport::start(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [(id(2), b.local_addr())],
    )
    .await
    .unwrap();
    a.send(id(2), vote(1));
    a.flush();
    assert!(recv_within(&mut b, Duration::from_secs(5)).await.is_some());
    // Take B out of A's address book: "nothing more is sent to it".
    a.handle().remove_peer(id(2));
    assert!(!a.handle().peers().contains_key(&id(2)));
    a.send(id(2), vote(1));
    a.flush();
    let got = recv_within(&mut b, Duration::from_secs(2)).await;
    assert!(
        got.is_none(),
        "a message sent after remove_peer was delivered: {got:?}"
    );
}

#[tokio::test]
async fn a_moved_peer_gets_the_next_sends_at_its_new_address() {
    let placeholder = "127.0.0.1:9".parse().unwrap();
    let mut old_b = TcpTransport::start(
        id(2),
        "127.0.0.1:0".parse().unwrap(),
        [(id(1), placeholder)],
    )
    .await
    .unwrap();
    let mut new_b = TcpTransport::start(
        id(2),
        "127.0.0.1:0".parse().unwrap(),
        [(id(1), placeholder)],
    )
    .await
    .unwrap();
    let mut a = TcpTransport::start(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [(id(2), old_b.local_addr())],
    )
    .await
    .unwrap();
    a.send(id(2), vote(1));
    a.flush();
    assert!(
        recv_within(&mut old_b, Duration::from_secs(5))
            .await
            .is_some()
    );
    // B moved: "Messages to it flow from the next send."
    a.handle().add_peer(id(2), new_b.local_addr());
    for _ in 0..5 {
        a.send(id(2), vote(1));
        a.flush();
    }
    let at_new = recv_within(&mut new_b, Duration::from_secs(2)).await;
    let at_old = recv_within(&mut old_b, Duration::from_millis(200)).await;
    assert!(
        at_new.is_some(),
        "sends after add_peer(new address) never reached the new address (old address got {at_old:?})"
    );
}

// ---------------------------------------------------------------------------------------
// DiskStorage
// ---------------------------------------------------------------------------------------

fn entry(index: u64, term: u64, size: usize) -> LogEntry<Bytes> {
    LogEntry {
        index: LogIndex::new(index),
        term: Term::new(term),
        payload: EntryPayload::Command(Bytes::from(vec![index as u8 | 1; size])),
    }
}

fn founding() -> Membership {
    Membership::from_voters([id(1), id(2), id(3)])
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir.join("log"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .collect();
    paths.sort();
    paths
}

/// One append of three 8 KiB entries, cut by a crash before its fdatasync returned: the
/// kernel had written back the later pages of the batch but not a page in its first record.
/// Nothing of that batch was acknowledged; entries 1..=3 were. The directory is a state a
/// crash can leave, and it must open (keeping 1..=3).
#[tokio::test]
async fn a_crash_that_leaves_an_unwritten_page_inside_the_last_batch_still_opens() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let mut storage = DiskStorage::open(dir.path()).await.unwrap();
        storage.load().await.unwrap();
        storage
            .bootstrap(yggr::NodeId::new(1).unwrap(), &founding())
            .await
            .unwrap();
        storage
            .persist(vec![StorageWrite::Entries(
                (1..=3).map(|index| entry(index, 1, 100)).collect(),
            )])
            .await
            .unwrap();
        before = fs::metadata(&segments(dir.path())[0]).unwrap().len();
        storage
            .persist(vec![StorageWrite::Entries(
                (4..=6).map(|index| entry(index, 1, 8192)).collect(),
            )])
            .await
            .unwrap();
    }
    // The un-acknowledged batch lost one whole 4 KiB page inside record 4.
    let segment = segments(dir.path())[0].clone();
    let page = (before / 4096 + 1) * 4096;
    let file = OpenOptions::new().write(true).open(&segment).unwrap();
    file.write_all_at(&[0; 4096], page).unwrap();
    drop(file);
    let opened = DiskStorage::open(dir.path()).await;
    let error = opened.as_ref().err().map(ToString::to_string);
    assert!(
        error.is_none(),
        "a crash in the middle of an unacknowledged append left a log that does not open: {error:?}"
    );
}

/// The first append into a new segment is cut by a crash after the header (recovery keeps a
/// header-only segment). With a segment limit at or below the header size the next append
/// tries to create the same file again and the storage is poisoned.
#[tokio::test]
async fn an_empty_last_segment_takes_the_next_append_whatever_the_segment_limit() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut storage = DiskStorage::open(dir.path())
            .await
            .unwrap()
            .with_segment_bytes(16);
        storage.load().await.unwrap();
        storage
            .bootstrap(yggr::NodeId::new(1).unwrap(), &founding())
            .await
            .unwrap();
        storage
            .persist(vec![StorageWrite::Entries(vec![entry(1, 1, 10)])])
            .await
            .unwrap();
        storage
            .persist(vec![StorageWrite::Entries(vec![entry(2, 1, 10)])])
            .await
            .unwrap();
    }
    let all = segments(dir.path());
    assert_eq!(all.len(), 2);
    // The second segment's record never made it: only the header (20 bytes) and a torn record.
    let file = OpenOptions::new().write(true).open(&all[1]).unwrap();
    file.set_len(20 + 5).unwrap();
    drop(file);
    let mut storage = DiskStorage::open(dir.path())
        .await
        .unwrap()
        .with_segment_bytes(16);
    let state = storage.load().await.unwrap().unwrap();
    assert_eq!(state.log.len(), 1);
    let result = storage
        .persist(vec![StorageWrite::Entries(vec![entry(2, 2, 10)])])
        .await;
    assert!(result.is_ok(), "append after recovery failed: {result:?}");
}
