//! Leadership transfer under chaos, and a scripted transfer on a healthy cluster.

use proptest::prelude::*;
use yggr_core::{Event, NodeId};

use crate::harness::{Cluster, ClusterOptions};
use crate::policy::{Workload, happy_step};
use crate::tests::{cases, chaos_with};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(128)))]

    #[test]
    fn transfers_under_chaos_keep_every_invariant(seed in any::<u64>(), nodes in prop_oneof![Just(3u64), Just(5u64)]) {
        chaos_with("transfer", seed, nodes, 1500)?;
    }
}

#[test]
fn transfer_on_a_healthy_cluster_hands_leadership_to_the_target() {
    let mut cluster = Cluster::new(ClusterOptions::new(5, 31));
    for _ in 0..3_000 {
        if cluster.leader().is_some() {
            break;
        }
        happy_step(&mut cluster, &Workload::default()).unwrap();
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
        happy_step(&mut cluster, &Workload::default()).unwrap();
    }
    assert_eq!(cluster.leader(), Some(target));
    let _: NodeId = target;
}
