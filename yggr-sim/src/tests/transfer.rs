//! Leadership transfer under chaos, and a scripted transfer on a healthy cluster.

use yggr_core::{Event, NodeId};

use crate::harness::{Cluster, ClusterOptions};
use crate::policy::happy_step;
use crate::tests::run_suite;

#[test]
fn transfers_with_membership_churn_keep_every_invariant_and_recover() {
    run_suite("transfer");
}

#[test]
fn transfer_on_a_healthy_cluster_hands_leadership_to_the_target() {
    let mut cluster = Cluster::new(ClusterOptions::new(5, 31));
    for _ in 0..3_000 {
        if cluster.leader().is_some() {
            break;
        }
        happy_step(&mut cluster).unwrap();
    }
    let leader = cluster.leader().expect("a leader");
    let target = cluster.ids().into_iter().find(|id| *id != leader).unwrap();
    cluster
        .step_node(leader, Event::TransferLeadership { target })
        .unwrap();
    for _ in 0..3_000 {
        if cluster.leader() == Some(target) {
            break;
        }
        happy_step(&mut cluster).unwrap();
    }
    assert_eq!(cluster.leader(), Some(target));
    let _: NodeId = target;
}
