//! Linearizable reads: they see every write completed before them; reads queued together
//! share one confirmation round; a lease serves them without one; they fail with the right
//! error off the leader and when leadership is lost.

use std::sync::atomic::Ordering;

use crate::common::*;
use yggr::ReadError;

#[tokio::test(start_paused = true)]
async fn a_read_sees_every_write_completed_before_it() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    for command in 1..=5 {
        leader.write(command).await.unwrap();
        let seen = leader
            .read_linearizable(|state: &Recorder| state.applied.clone())
            .await
            .unwrap();
        assert_eq!(seen, (1..=command).collect::<Vec<_>>());
    }
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_read_off_the_leader_names_the_leader_or_says_there_is_none() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .values()
        .find(|node| node.id() != leader.id())
        .unwrap();
    assert_eq!(
        follower.read_linearizable(|_: &Recorder| ()).await,
        Err(ReadError::NotLeader {
            leader_hint: leader.id()
        })
    );
    cluster.shutdown().await;
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.network.isolate(id(2));
    assert_eq!(
        cluster
            .node(id(2))
            .read_linearizable(|_: &Recorder| ())
            .await,
        Err(ReadError::NoLeader)
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn reads_queued_together_share_one_confirmation_round() {
    let (cluster, counters) = Cluster::start_counted(3, |_| {}).await;
    let leader = cluster.leader().await;
    leader.write(1).await.unwrap();
    let appends = &counters[&leader.id()].appends;
    let before = appends.load(Ordering::Relaxed);
    let reads: Vec<_> = (0..100)
        .map(|_| {
            let leader = leader.clone();
            tokio::spawn(async move {
                leader
                    .read_linearizable(|s: &Recorder| s.applied.len())
                    .await
            })
        })
        .collect();
    for read in reads {
        assert_eq!(read.await.unwrap(), Ok(1));
    }
    let sent = appends.load(Ordering::Relaxed) - before;
    // One heartbeat per follower confirms the whole batch (a heartbeat tick may add a round).
    assert!(sent <= 2 * 2, "{sent} AppendEntries for 100 reads");
    cluster.shutdown().await;
}

/// A lease serves reads without asking the followers: right after a round was acknowledged,
/// reads succeed even with every follower cut off (without a lease they would wait for a
/// round that cannot complete, and fail when the leader steps down).
#[tokio::test(start_paused = true)]
async fn with_a_lease_reads_are_served_without_a_round_trip() {
    let cluster = Cluster::start(3, |config| config.lease_duration_ticks = 5).await;
    let leader = cluster.leader().await;
    leader.write(1).await.unwrap();
    leader.read_linearizable(|_: &Recorder| ()).await.unwrap();
    cluster.network.isolate(leader.id());
    assert_eq!(
        leader
            .read_linearizable(|s: &Recorder| s.applied.clone())
            .await,
        Ok(vec![1])
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_read_waiting_when_the_leader_loses_its_role_fails_stepped_down() {
    let cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    leader.write(1).await.unwrap();
    cluster.network.isolate(leader.id());
    let read = leader.read_linearizable(|_: &Recorder| ()).await;
    assert_eq!(read, Err(ReadError::SteppedDown));
    cluster.shutdown().await;
}
