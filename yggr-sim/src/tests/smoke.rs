//! Happy-path sanity: a reliable cluster elects one leader and commits proposals everywhere.

use crate::harness::{Cluster, ClusterOptions};
use crate::policy::{Policy, RunOptions, Workload, happy_step, run};

#[test]
fn three_nodes_elect_a_leader_and_commit_on_every_node() {
    let mut cluster = Cluster::new(ClusterOptions::new(3, 1));
    for _ in 0..3000 {
        happy_step(&mut cluster, &Workload::default())
            .unwrap_or_else(|failure| panic!("{failure}"));
    }
    let leader = cluster.leader().expect("a leader");
    let committed = cluster.engine(leader).unwrap().commit_index();
    assert!(committed.get() > 10, "only {committed} committed");
    for node in cluster.ids() {
        let applied = cluster.nodes[&node].state_machine.last_applied;
        assert!(applied.get() > 0, "node {node} applied nothing");
    }
}

#[test]
fn same_seed_same_run() {
    let options = RunOptions::new(99, 5, 2000, Policy::Chaos);
    let first = run(&options).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run(&options).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first, second);
}
