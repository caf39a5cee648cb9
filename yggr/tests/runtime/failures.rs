//! What callers see when the node cannot go on: a storage error stops it and every call
//! answers `Fatal`; a driver that died answers `DriverDead`; a shut-down node answers
//! `Shutdown` from every call; a start over unreadable or inconsistent storage is refused.
//! Also the state machine's own refusals: a snapshot it cannot take now, and the in-flight
//! limit for membership changes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use yggr::{
    Bootstrap, Bytes, DecodeError, EntryPayload, LocalNetwork, LogEntry, LogIndex, MemStorage,
    MembershipError, Node, NodeStartError, ProposeError, ReadError, ShutdownError, SnapshotError,
    StateMachine, StatusError, StoredState, Term, TransferLeadershipError,
};

/// A single founding node over `storage`, elected.
async fn lone_node(storage: FaultyStorage) -> Node<Recorder> {
    let network = LocalNetwork::new();
    lone_leader(&network, Recorder::default(), storage, |_| {}).await
}

#[tokio::test(start_paused = true)]
async fn a_storage_failure_stops_the_node_and_every_call_answers_fatal() {
    let storage = FaultyStorage::default();
    let node = lone_node(storage.clone()).await;
    assert_eq!(node.write(1).await, Ok(1));
    storage.faults.fail_writes();
    // The write whose entry could not be stored is answered, not left waiting.
    assert_eq!(node.write(2).await, Err(ProposeError::Fatal));
    assert_eq!(node.write(3).await, Err(ProposeError::Fatal));
    assert_eq!(node.propose(3).await, Err(ProposeError::Fatal));
    assert_eq!(node.write_batch(vec![3]).await, Err(ProposeError::Fatal));
    assert_eq!(
        node.read_linearizable(|_: &Recorder| ()).await,
        Err(ReadError::Fatal)
    );
    assert_eq!(
        node.transfer_leadership_to(id(2)).await,
        Err(TransferLeadershipError::Fatal)
    );
    assert_eq!(node.add_peer(id(2)).await, Err(MembershipError::Fatal));
    assert_eq!(
        node.admin().add_learner(id(2)).await,
        Err(MembershipError::Fatal)
    );
    assert!(node.admin().trigger_snapshot().await.is_err());
    assert_eq!(node.status().await, Err(StatusError::Fatal));
    assert_eq!(node.metrics().await, Err(StatusError::Fatal));
    assert_eq!(node.node_metrics().await, Err(StatusError::Fatal));
    assert_eq!(node.shutdown().await, Err(ShutdownError::Fatal));
}

#[tokio::test(start_paused = true)]
async fn a_driver_that_died_is_reported_as_driver_dead() {
    let storage = FaultyStorage::default();
    let node = lone_node(storage.clone()).await;
    storage.faults.panic_on_write();
    // The driver panics inside the storage call: the write is answered, not left waiting.
    assert_eq!(node.write(1).await, Err(ProposeError::DriverDead));
    assert_eq!(node.write(2).await, Err(ProposeError::DriverDead));
    assert_eq!(
        node.read_linearizable(|_: &Recorder| ()).await,
        Err(ReadError::DriverDead)
    );
    assert_eq!(
        node.transfer_leadership_to(id(2)).await,
        Err(TransferLeadershipError::DriverDead)
    );
    assert_eq!(
        node.admin().remove_peer(id(2)).await,
        Err(MembershipError::DriverDead)
    );
    assert_eq!(node.status().await, Err(StatusError::DriverDead));
    assert_eq!(node.shutdown().await, Err(ShutdownError::DriverDead));
}

#[tokio::test(start_paused = true)]
async fn a_shut_down_node_answers_shutdown_from_every_call() {
    let storage = FaultyStorage::default();
    let node = lone_node(storage.clone()).await;
    let other = node.clone();
    node.shutdown().await.unwrap();
    assert_eq!(other.write(1).await, Err(ProposeError::Shutdown));
    assert_eq!(
        other.write_batch(vec![1]).await,
        Err(ProposeError::Shutdown)
    );
    assert_eq!(
        other.read_linearizable(|_: &Recorder| ()).await,
        Err(ReadError::Shutdown)
    );
    assert_eq!(
        other.transfer_leadership_to(id(2)).await,
        Err(TransferLeadershipError::Shutdown)
    );
    assert_eq!(other.add_peer(id(2)).await, Err(MembershipError::Shutdown));
    assert_eq!(
        other.remove_peer(id(2)).await,
        Err(MembershipError::Shutdown)
    );
    assert_eq!(
        other.admin().promote_learner(id(2)).await,
        Err(MembershipError::Shutdown)
    );
    assert!(other.admin().trigger_snapshot().await.is_err());
    assert_eq!(other.status().await, Err(StatusError::Shutdown));
    assert_eq!(other.metrics().await, Err(StatusError::Shutdown));
    assert_eq!(other.node_metrics().await, Err(StatusError::Shutdown));
    assert_eq!(other.shutdown().await, Err(ShutdownError::AlreadyShutdown));
}

#[tokio::test(start_paused = true)]
async fn a_start_over_unreadable_storage_is_refused_with_its_error() {
    let storage = FaultyStorage {
        load_error: true,
        ..FaultyStorage::default()
    };
    let network = LocalNetwork::new();
    let outcome = Node::start(
        test_config(id(1), [id(2)]),
        Recorder::default(),
        storage,
        network.transport(id(1)),
    )
    .await;
    match outcome {
        Err(NodeStartError::Storage(error)) => {
            assert_eq!(error.to_string(), "the disk is unreadable");
        }
        other => panic!("expected a storage error, got {:?}", other.err()),
    }
}

#[tokio::test(start_paused = true)]
async fn a_start_over_inconsistent_stored_state_is_refused() {
    let entry = |index: u64| LogEntry {
        term: Term::new(1),
        index: LogIndex::new(index),
        payload: EntryPayload::Command(Bytes::from_static(&[0; 8])),
    };
    // A log with a hole: entry 2 is missing.
    let storage = FaultyStorage {
        load_instead: Some(StoredState {
            node_id: None,
            founding: yggr::Membership::from_voters([id(1), id(2)]),
            current_term: Term::new(1),
            voted_for: None,
            snapshot: None,
            log: vec![entry(1), entry(3)],
        }),
        ..FaultyStorage::default()
    };
    let network = LocalNetwork::new();
    let mut config = test_config(id(1), []);
    config.bootstrap = Bootstrap::Recover;
    let outcome = Node::start(
        config,
        Recorder::default(),
        storage,
        network.transport(id(1)),
    )
    .await;
    assert!(
        matches!(outcome, Err(NodeStartError::Recovery(_))),
        "{:?}",
        outcome.err()
    );
}

/// A Recorder whose snapshots fail until told otherwise.
#[derive(Clone, Default)]
struct Reluctant {
    inner: Recorder,
    willing: Arc<std::sync::atomic::AtomicBool>,
    attempts: Arc<std::sync::atomic::AtomicU64>,
}

impl StateMachine for Reluctant {
    type Command = u64;
    type Response = usize;

    fn encode_command(command: &u64) -> Vec<u8> {
        Recorder::encode_command(command)
    }

    fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
        Recorder::decode_command(bytes)
    }

    fn apply(&mut self, command: u64) -> usize {
        self.inner.apply(command)
    }

    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if self.willing.load(Ordering::Relaxed) {
            self.inner.snapshot()
        } else {
            Err(SnapshotError::new("busy compacting"))
        }
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        self.inner.restore(bytes);
    }
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_the_state_machine_refuses_is_reported_and_retried_at_the_next_hint() {
    let network = LocalNetwork::new();
    let state = Reluctant::default();
    let (willing, attempts) = (Arc::clone(&state.willing), Arc::clone(&state.attempts));
    let node = lone_leader(&network, state, MemStorage::new(), |config| {
        config.snapshot_hint_threshold_entries = 10;
    })
    .await;
    let refused = node.admin().trigger_snapshot().await.unwrap_err();
    assert_eq!(refused.to_string(), "snapshot failed: busy compacting");
    for command in 0..30 {
        node.write(command).await.unwrap();
    }
    let tried = attempts.load(Ordering::Relaxed);
    assert!(tried >= 2, "the hints asked again ({tried} attempts)");
    assert!(
        node.metrics().await.unwrap().log_len >= 30,
        "nothing compacted yet"
    );
    willing.store(true, Ordering::Relaxed);
    for command in 30..45 {
        node.write(command).await.unwrap();
    }
    let log_len = node.metrics().await.unwrap().log_len;
    assert!(
        log_len < 30,
        "a later hint compacted the log ({log_len} entries left)"
    );
    node.admin().trigger_snapshot().await.unwrap();
    node.shutdown().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn membership_changes_count_toward_the_in_flight_limit() {
    let cluster = Cluster::start(3, |config| config.max_pending_proposals = 1).await;
    let leader = cluster.leader().await;
    cluster.network.isolate(leader.id());
    let waiting = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(1).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        leader.admin().add_learner(id(4)).await,
        Err(MembershipError::Busy)
    );
    let _ = tokio::time::timeout(Duration::from_secs(2), waiting)
        .await
        .expect("the waiting write is answered when the leader steps down");
    cluster.shutdown().await;
}
