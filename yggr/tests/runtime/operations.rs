//! Leadership transfer, status and metrics, and shutdown.

use std::time::Duration;

use crate::common::*;
use yggr::{ProposeError, ReadError, Role, ShutdownError, StatusError, TransferLeadershipError};

#[tokio::test(start_paused = true)]
async fn transfer_hands_leadership_to_the_target() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.write(1).await;
    let leader = cluster.leader().await;
    let target = cluster
        .nodes
        .keys()
        .copied()
        .find(|node| *node != leader.id())
        .unwrap();
    leader.transfer_leadership_to(target).await.unwrap();
    let new = eventually(Duration::from_secs(5), || async {
        (cluster.node(target).current_leader() == Some(target)).then_some(())
    })
    .await;
    assert!(new.is_some(), "node {target} leads");
    assert_eq!(cluster.node(target).write(2).await, Ok(2));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn transfer_refusals() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.write(1).await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .values()
        .find(|node| node.id() != leader.id())
        .unwrap();
    assert_eq!(
        leader.transfer_leadership_to(leader.id()).await,
        Err(TransferLeadershipError::InvalidTarget)
    );
    assert_eq!(
        leader.transfer_leadership_to(id(9)).await,
        Err(TransferLeadershipError::InvalidTarget)
    );
    assert_eq!(
        follower.transfer_leadership_to(leader.id()).await,
        Err(TransferLeadershipError::NotLeader {
            leader_hint: leader.id()
        })
    );
    cluster.shutdown().await;
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.network.isolate(id(1));
    assert_eq!(
        cluster.node(id(1)).transfer_leadership_to(id(2)).await,
        Err(TransferLeadershipError::NoLeader)
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn status_and_metrics_describe_the_node_and_its_followers() {
    let cluster = Cluster::start(3, |_| {}).await;
    for command in 1..=3 {
        cluster.write(command).await;
    }
    let leader = cluster.leader().await;
    assert_eq!(leader.current_leader(), Some(leader.id()));
    let status = leader.status().await.unwrap();
    assert_eq!(status.id, leader.id());
    assert_eq!(status.role, Role::Leader);
    assert_eq!(status.leader, Some(leader.id()));
    assert_eq!(status.membership.voters.len(), 3);
    assert!(status.membership.voters.contains(&leader.id()));
    assert!(status.commit_index.get() >= 4, "the no-op and three writes");
    let metrics = leader.metrics().await.unwrap();
    assert_eq!(metrics.commit_index, status.commit_index);
    assert_eq!(metrics.current_term, status.current_term);
    assert_eq!(metrics.role_code, Role::Leader.code());
    assert!(metrics.leader_elections_won >= 1);
    assert!(metrics.entries_committed >= 4);
    assert!(metrics.append_entries_sent > 0);
    let node_metrics = leader.node_metrics().await.unwrap();
    assert_eq!(node_metrics.replication.followers.len(), 2);
    for progress in node_metrics.replication.followers.values() {
        assert_eq!(progress.matched, status.commit_index);
        assert_eq!(progress.next_index, status.commit_index.next());
        assert!(!progress.is_learner);
    }
    let follower = cluster
        .nodes
        .values()
        .find(|node| node.id() != leader.id())
        .unwrap();
    assert!(
        follower
            .node_metrics()
            .await
            .unwrap()
            .replication
            .followers
            .is_empty()
    );
    assert_eq!(follower.current_leader(), Some(leader.id()));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn shutdown_drains_answers_everyone_and_refuses_what_comes_after() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    cluster.write(1).await;
    let leader = cluster.leader().await;
    let writes: Vec<_> = (2..=20)
        .map(|command| {
            let leader = leader.clone();
            tokio::spawn(async move { (command, leader.write(command).await) })
        })
        .collect();
    tokio::task::yield_now().await;
    let other = leader.clone();
    leader.clone().shutdown().await.unwrap();
    // Every write was answered: committed and applied, or refused because it came too late.
    let mut acknowledged = vec![1];
    for write in writes {
        let (command, outcome) = write.await.unwrap();
        match outcome {
            Ok(_) => acknowledged.push(command),
            Err(ProposeError::Shutdown) => {}
            Err(other) => panic!("write {command}: {other:?}"),
        }
    }
    assert_eq!(other.write(99).await, Err(ProposeError::Shutdown));
    assert_eq!(
        other.read_linearizable(|_: &Recorder| ()).await,
        Err(ReadError::Shutdown)
    );
    assert_eq!(other.status().await, Err(StatusError::Shutdown));
    assert_eq!(
        other.clone().shutdown().await,
        Err(ShutdownError::AlreadyShutdown)
    );
    // No acknowledged write is lost: the rest of the cluster has them, and so does the node
    // after a restart.
    let stopped = leader.id();
    cluster.nodes.remove(&stopped);
    cluster.restart(stopped).await;
    cluster.converged(&acknowledged).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_leader_shutting_down_hands_over_first_so_the_cluster_waits_no_election_timeout() {
    let mut cluster = Cluster::start(3, |_| {}).await;
    let leader = cluster.leader().await;
    cluster.write(1).await;
    let term = leader.status().await.unwrap().current_term;
    let others: Vec<_> = cluster
        .nodes
        .keys()
        .copied()
        .filter(|me| *me != leader.id())
        .collect();
    let started = tokio::time::Instant::now();
    cluster.nodes.remove(&leader.id());
    leader.shutdown().await.unwrap();
    let successor = eventually(Duration::from_secs(10), || async {
        others
            .iter()
            .map(|me| cluster.node(*me))
            .find(|node| node.current_leader() == Some(node.id()))
    })
    .await
    .expect("another node leads");
    // An election after the leader vanished would take at least the minimum election
    // timeout (10 ticks of 10 ms) of silence; a handover takes a round trip or two.
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "a successor led after {:?}",
        started.elapsed()
    );
    assert_eq!(successor.status().await.unwrap().current_term, term.next());
    assert_eq!(cluster.write(2).await, 2);
    cluster.shutdown().await;
}
