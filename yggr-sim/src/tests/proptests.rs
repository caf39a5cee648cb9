//! Liveness under the happy policy: a leader is elected and proposals commit on a majority
//! within a bounded number of steps.

use proptest::prelude::*;

use crate::harness::{Cluster, ClusterOptions};
use crate::policy::{Workload, happy_step};
use crate::tests::cases;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(32)))]

    #[test]
    fn happy_cluster_elects_a_leader_and_commits_on_a_majority(
        seed in any::<u64>(),
        nodes in prop_oneof![Just(3u64), Just(5u64)],
    ) {
        let mut cluster = Cluster::new(ClusterOptions::new(nodes, seed));
        let mut steps = 0;
        while cluster.leader().is_none() {
            happy_step(&mut cluster, &Workload::default()).map_err(|f| TestCaseError::fail(f.to_string()))?;
            steps += 1;
            prop_assert!(steps < 2_000, "no leader after {} steps", steps);
        }
        let leader = cluster.leader().unwrap();
        let before = cluster.engine(leader).unwrap().last_log_index();
        for _ in 0..5 {
            cluster.propose(leader).map_err(|f| TestCaseError::fail(f.to_string()))?;
        }
        let target = cluster.engine(leader).unwrap().last_log_index();
        prop_assert_eq!(target.get(), before.get() + 5, "the leader accepted all five");
        let majority = (nodes / 2 + 1) as usize;
        let mut steps = 0;
        loop {
            let holders = cluster
                .ids()
                .iter()
                .filter(|id| cluster.nodes[id].state_machine.last_applied >= target)
                .count();
            if holders >= majority {
                break;
            }
            happy_step(&mut cluster, &Workload::default()).map_err(|f| TestCaseError::fail(f.to_string()))?;
            steps += 1;
            prop_assert!(steps < 3_000, "proposals not applied on a majority after {} steps", steps);
        }
    }
}
