//! Writes: answered after commit and apply, with the state machine's response; refused with
//! the right error off the leader and above the in-flight limit, with an unknown outcome when
//! leadership is lost and the fate cannot be learned (see `write_fate`);
//! batched into one storage write and one message per peer under concurrency.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::common::*;
use yggr::{ProposeError, Role};

#[tokio::test(start_paused = true)]
async fn write_answers_with_the_state_machines_response_once_committed_and_applied() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    assert_eq!(leader.write(10).await, Ok(1));
    assert_eq!(leader.propose(11).await, Ok(2), "propose is write");
    // Applied on the leader when answered; the followers converge.
    assert_eq!(cluster.applied(leader.id()), vec![10, 11]);
    assert_eq!(cluster.converged(&[10, 11]).await, vec![10, 11]);
    let status = leader.status().await.unwrap();
    assert_eq!(status.commit_index, status.last_applied);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn write_batch_commits_in_order_and_answers_every_response() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    leader.write(1).await.unwrap();
    let responses = leader.write_batch(vec![2, 3, 4]).await.unwrap();
    assert_eq!(responses, vec![2, 3, 4]);
    assert_eq!(leader.write_batch(Vec::new()).await, Ok(Vec::new()));
    assert_eq!(cluster.converged(&[1, 2, 3, 4]).await, vec![1, 2, 3, 4]);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn write_on_a_follower_names_the_leader_and_without_a_leader_says_so() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .values()
        .find(|node| node.id() != leader.id())
        .unwrap();
    assert_eq!(
        follower.write(1).await,
        Err(ProposeError::NotLeader {
            leader_hint: leader.id()
        })
    );
    assert_eq!(
        follower.write_batch(vec![1, 2]).await,
        Err(ProposeError::NotLeader {
            leader_hint: leader.id()
        })
    );
    cluster.shutdown().await;

    // A node cut off from the start knows no leader.
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.network.isolate(id(3));
    assert_eq!(
        cluster.node(id(3)).write(1).await,
        Err(ProposeError::NoLeader)
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn writes_in_flight_of_a_leader_cut_off_are_answered_outcome_unknown_after_the_wait() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    cluster.network.isolate(leader.id());
    let writes: Vec<_> = (0..3)
        .map(|command| {
            let leader = leader.clone();
            tokio::spawn(async move { leader.write(command).await })
        })
        .collect();
    // Still cut off: the leader steps down (check-quorum, within an election timeout or
    // two) and cannot learn whether another leader commits its entries, so once the outcome
    // wait is over it says exactly that.
    for write in writes {
        let answer = tokio::time::timeout(Duration::from_secs(2), write)
            .await
            .expect("a stepped-down leader answers its waiting writers")
            .unwrap();
        assert_eq!(answer, Err(ProposeError::OutcomeUnknown));
    }
    assert_ne!(leader.current_leader(), Some(leader.id()));
    // Once it hears of the new leader it names it.
    cluster.network.heal();
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader.id(), leader.id());
    assert_eq!(
        leader.write(9).await,
        Err(ProposeError::NotLeader {
            leader_hint: new_leader.id()
        })
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn writes_above_max_pending_proposals_are_busy() {
    let cluster = Cluster::start(3, |config| config.max_pending_proposals = 2).await;
    let leader = cluster.leader().await;
    // Cut the leader off so nothing commits while the limit is reached.
    cluster.network.isolate(leader.id());
    let first = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(1).await }
    });
    let second = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write(2).await }
    });
    tokio::task::yield_now().await;
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(leader.write(3).await, Err(ProposeError::Busy));
    assert_eq!(leader.write_batch(vec![3]).await, Err(ProposeError::Busy));
    // The leader steps down (check-quorum): its waiting writes are answered, none hangs.
    for waiting in [first, second] {
        let outcome = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("a stepped-down leader answers its waiting writers")
            .unwrap();
        assert_eq!(outcome, Err(ProposeError::OutcomeUnknown));
    }
    assert_ne!(leader.status().await.unwrap().role, Role::Leader);
    cluster.network.heal();
    // Capacity is given back once the waiting writes are answered.
    cluster.write(4).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_larger_than_the_in_flight_limit_goes_through_when_nothing_else_waits() {
    let cluster = Cluster::start(3, |config| config.max_pending_proposals = 2).await;
    let leader = cluster.leader().await;
    let batch: Vec<u64> = (1..=10).collect();
    let responses = leader.write_batch(batch).await.unwrap();
    assert_eq!(responses.len(), 10);
    // Taking the whole limit, it leaves no room for a write that arrives meanwhile (the
    // leader is cut off for a moment so that the batch cannot commit before that write).
    cluster.network.isolate(leader.id());
    let big = tokio::spawn({
        let leader = leader.clone();
        async move { leader.write_batch((11..=20).collect()).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(leader.write(21).await, Err(ProposeError::Busy));
    cluster.network.heal();
    assert_eq!(big.await.unwrap().unwrap().len(), 10);
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn concurrent_writes_share_one_storage_write_and_one_append_per_peer() {
    let (cluster, counters) = Cluster::start_counted(3, |_| {}).await;
    let leader = cluster.leader().await;
    leader.write(0).await.unwrap();
    let counted = &counters[&leader.id()];
    let persists_before = counted.storage.persists.load(Ordering::Relaxed);
    let appends_before = counted.appends.load(Ordering::Relaxed);
    let writes: Vec<_> = (1..=200)
        .map(|command| {
            let leader = leader.clone();
            tokio::spawn(async move { leader.write(command).await })
        })
        .collect();
    for write in writes {
        write.await.unwrap().unwrap();
    }
    let persists = counted.storage.persists.load(Ordering::Relaxed) - persists_before;
    let appends = counted.appends.load(Ordering::Relaxed) - appends_before;
    // The 200 writes queue up while the driver is busy, and go out together: a handful of
    // storage writes and of appends per peer, not 200 of each.
    assert!(persists <= 4, "{persists} storage writes for 200 proposals");
    assert!(
        appends <= 2 * 4,
        "{appends} AppendEntries for 200 proposals"
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_batch_delay_holds_proposals_until_the_batch_fills_or_the_delay_passes() {
    let (node, storage, _) = counted_single_node(|config| {
        config.max_batch_delay_ticks = 5;
        config.max_batch_entries = 3;
    })
    .await;
    node.write(0).await.unwrap();
    // Two writes wait for the delay (5 ticks of 10 ms)...
    let started = tokio::time::Instant::now();
    let (first, second) = tokio::join!(node.write(1), node.write(2));
    assert_eq!((first, second), (Ok(2), Ok(3)));
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "{:?}",
        started.elapsed()
    );
    // ...three fill the batch and go at once, in one storage write.
    let persists = storage.persists.load(Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    let (a, b, c) = tokio::join!(node.write(3), node.write(4), node.write(5));
    assert_eq!((a, b, c), (Ok(4), Ok(5), Ok(6)));
    assert!(
        started.elapsed() < Duration::from_millis(10),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(storage.persists.load(Ordering::Relaxed) - persists, 1);
    node.shutdown().await.unwrap();
}

/// A write's share of `max_pending_proposals` is given back before its writer hears back, so
/// a writer that writes again at once never finds the limit taken by its own answered write.
/// Real threads: the answer comes from the apply thread while the writer runs on a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_writes_again_at_once_is_never_busy_because_of_its_answered_write() {
    let network = yggr::LocalNetwork::new();
    let node = lone_leader(
        &network,
        Recorder::default(),
        yggr::MemStorage::new(),
        |config| {
            config.max_pending_proposals = 1;
        },
    )
    .await;
    for command in 0..2000 {
        assert!(node.write(command).await.is_ok(), "write {command}");
        assert!(
            node.write_batch(vec![command]).await.is_ok(),
            "batch {command}"
        );
    }
    node.shutdown().await.unwrap();
}
