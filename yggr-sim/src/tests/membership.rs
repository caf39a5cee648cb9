//! Membership under chaos: voters and learners added and removed, joiners spliced in, the
//! leader removing itself, lagging learners promoted; plus scripted scenarios for each.

use yggr_core::{ConfigChange, Event, NodeId, Role};

use crate::harness::{Cluster, ClusterOptions};
use crate::policy::happy_step;
use crate::tests::{run_suite, settle};

#[test]
fn membership_churn_between_three_and_seven_voters_keeps_every_invariant_and_recovers() {
    run_suite("membership");
}

fn id(raw: u64) -> NodeId {
    NodeId::new(raw).unwrap()
}

fn leader_of(cluster: &Cluster) -> NodeId {
    cluster.leader().expect("a leader")
}

fn committed_everywhere(
    cluster: &Cluster,
    node: NodeId,
    change_index: yggr_core::LogIndex,
) -> bool {
    cluster
        .engine(node)
        .is_some_and(|engine| engine.commit_index() >= change_index)
}

/// Proposes `change` at the leader (retrying while the leader is not ready, e.g. its no-op
/// is not committed yet) and runs until it commits there.
fn change(cluster: &mut Cluster, change: ConfigChange) {
    for _ in 0..100 {
        settle(cluster, 5_000, |c| c.leader().is_some());
        let leader = leader_of(cluster);
        cluster
            .step_node(leader, Event::ProposeConfigChange(change))
            .unwrap_or_else(|failure| panic!("{failure}"));
        let index = cluster.engine(leader).unwrap().last_log_index();
        let appended = cluster
            .engine(leader)
            .unwrap()
            .entry(index)
            .is_some_and(|entry| entry.membership().is_some());
        if appended {
            settle(cluster, 5_000, |c| {
                c.leader()
                    .is_some_and(|l| committed_everywhere(c, l, index))
            });
            return;
        }
        for _ in 0..20 {
            happy_step(cluster).unwrap_or_else(|failure| panic!("{failure}"));
        }
    }
    panic!("{change:?} was never accepted");
}

#[test]
fn joiner_added_as_learner_catches_up_and_is_promoted_to_voter() {
    let mut cluster = Cluster::new(ClusterOptions {
        joiners: 1,
        ..ClusterOptions::new(3, 11)
    });
    settle(&mut cluster, 3_000, |c| c.leader().is_some());
    let leader = leader_of(&cluster);
    for _ in 0..20 {
        cluster.propose(leader).unwrap();
    }
    change(&mut cluster, ConfigChange::AddLearner(id(4)));
    let joiner = id(4);
    settle(&mut cluster, 5_000, |c| {
        let leader_last = c.engine(leader_of(c)).unwrap().last_log_index();
        c.engine(joiner).unwrap().last_log_index() == leader_last
    });
    assert!(
        cluster
            .engine(joiner)
            .unwrap()
            .membership()
            .is_learner(joiner)
    );
    change(&mut cluster, ConfigChange::PromoteLearner(joiner));
    settle(&mut cluster, 5_000, |c| {
        c.engine(joiner).unwrap().membership().is_voter(joiner)
    });
}

#[test]
fn leader_removing_itself_steps_down_and_the_rest_elect_a_new_leader() {
    let mut cluster = Cluster::new(ClusterOptions::new(3, 12));
    settle(&mut cluster, 3_000, |c| c.leader().is_some());
    let old = leader_of(&cluster);
    change(&mut cluster, ConfigChange::RemovePeer(old));
    settle(&mut cluster, 10_000, |c| {
        c.leader().is_some_and(|l| l != old)
    });
    assert_ne!(cluster.engine(old).unwrap().role(), Role::Leader);
    let new_leader = leader_of(&cluster);
    assert!(
        !cluster
            .engine(new_leader)
            .unwrap()
            .membership()
            .contains(old)
    );
}

#[test]
fn lagging_learner_is_promoted_and_the_cluster_keeps_committing() {
    let mut cluster = Cluster::new(ClusterOptions {
        joiners: 1,
        ..ClusterOptions::new(3, 13)
    });
    settle(&mut cluster, 3_000, |c| c.leader().is_some());
    change(&mut cluster, ConfigChange::AddLearner(id(4)));
    // The learner falls behind while down.
    cluster.crash(id(4), false).unwrap();
    let leader = leader_of(&cluster);
    for _ in 0..30 {
        cluster.propose(leader).unwrap();
    }
    change(&mut cluster, ConfigChange::PromoteLearner(id(4)));
    cluster.restart(id(4)).unwrap();
    let leader = leader_of(&cluster);
    cluster.propose(leader).unwrap();
    let target = cluster.engine(leader).unwrap().last_log_index();
    settle(&mut cluster, 10_000, |c| {
        c.engine(id(4)).unwrap().commit_index() >= target
    });
}
