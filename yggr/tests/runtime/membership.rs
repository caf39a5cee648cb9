//! Membership through the admin handle: learners catch up (from a snapshot once the log was
//! compacted) and are promoted; voters are removed, the leader included; every refusal has
//! its own error.

use std::time::Duration;

use crate::common::*;
use yggr::{MembershipError, Role};

#[tokio::test(start_paused = true)]
async fn learner_added_after_compaction_catches_up_from_a_snapshot_and_is_promoted() {
    let mut cluster = Cluster::start(3, |config| config.snapshot_hint_threshold_entries = 8).await;
    for command in 1..=40 {
        cluster.write(command).await;
    }
    let leader = cluster.leader().await;
    leader.admin().trigger_snapshot().await.unwrap();
    let joiner = cluster.join(id(4)).await;
    leader.admin().add_learner(id(4)).await.unwrap();
    let status = leader.status().await.unwrap();
    assert!(status.membership.learners.contains(&id(4)));
    let everything: Vec<u64> = (1..=40).collect();
    cluster.converged(&everything).await;
    let learner_metrics = joiner.node_metrics().await.unwrap();
    assert!(
        learner_metrics.engine.snapshots_installed >= 1,
        "the learner caught up from the snapshot"
    );
    // The leader reports the learner's progress; promote it once caught up.
    let progress = leader.node_metrics().await.unwrap().replication.followers[&id(4)];
    assert!(progress.is_learner);
    assert_eq!(
        progress.matched,
        leader.status().await.unwrap().commit_index
    );
    leader.admin().promote_learner(id(4)).await.unwrap();
    let status = leader.status().await.unwrap();
    assert!(status.membership.voters.contains(&id(4)));
    assert!(!status.membership.learners.contains(&id(4)));
    cluster.write(41).await;
    cluster.converged(&[41]).await;
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn removing_the_leader_steps_it_down_and_the_others_elect_a_new_one() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.write(1).await;
    let old = cluster.leader().await;
    old.remove_peer(old.id()).await.unwrap();
    let new = eventually(Duration::from_secs(10), || async {
        let leaders: Vec<_> = cluster
            .nodes
            .values()
            .filter(|node| node.id() != old.id() && node.current_leader() == Some(node.id()))
            .cloned()
            .collect();
        leaders.first().cloned()
    })
    .await
    .expect("the remaining nodes elect a leader");
    assert_ne!(old.status().await.unwrap().role, Role::Leader);
    assert!(!new.status().await.unwrap().membership.contains(old.id()));
    assert_eq!(new.write(2).await, Ok(2));
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn each_refused_change_says_why() {
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.write(1).await;
    let leader = cluster.leader().await;
    let follower = cluster
        .nodes
        .values()
        .find(|node| node.id() != leader.id())
        .unwrap()
        .clone();
    let admin = leader.admin();
    assert_eq!(
        admin.add_peer(follower.id()).await,
        Err(MembershipError::AlreadyVoter(follower.id()))
    );
    assert_eq!(
        admin.promote_learner(follower.id()).await,
        Err(MembershipError::AlreadyVoter(follower.id()))
    );
    assert_eq!(
        admin.promote_learner(id(8)).await,
        Err(MembershipError::NotLearner(id(8)))
    );
    assert_eq!(
        admin.remove_peer(id(9)).await,
        Err(MembershipError::UnknownNode(id(9)))
    );
    admin.add_learner(id(5)).await.unwrap();
    assert_eq!(
        admin.add_learner(id(5)).await,
        Err(MembershipError::AlreadyLearner(id(5)))
    );
    assert_eq!(
        follower.admin().add_learner(id(6)).await,
        Err(MembershipError::NotLeader {
            leader_hint: leader.id()
        })
    );
    // A second change while the first is uncommitted: cut the leader off so it cannot commit.
    cluster.network.isolate(leader.id());
    let pending = tokio::spawn({
        let admin = admin.clone();
        async move { admin.add_learner(id(6)).await }
    });
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(
        admin.add_learner(id(7)).await,
        Err(MembershipError::ChangeInProgress)
    );
    // The leader steps down: the uncommitted change is answered, not left hanging. Cut off,
    // it cannot learn whether another leader commits the change, and says so.
    assert_eq!(pending.await.unwrap(), Err(MembershipError::OutcomeUnknown));
    cluster.shutdown().await;

    // A lone node cannot remove its only voter; one cut off knows no leader.
    let (node, _, _) = counted_single_node(|_| {}).await;
    assert_eq!(
        node.remove_peer(node.id()).await,
        Err(MembershipError::InvalidTargetMembership)
    );
    node.shutdown().await.unwrap();
    let cluster = Cluster::start(3, |_| {}).await;
    cluster.network.isolate(id(3));
    assert_eq!(
        cluster.node(id(3)).add_peer(id(4)).await,
        Err(MembershipError::NoLeader)
    );
    cluster.shutdown().await;
}
