//! Happy-path sanity and determinism: a reliable cluster elects one leader and commits
//! everywhere; the same options give the same run; a run replays from its text form.

use crate::harness::{Cluster, ClusterOptions};
use crate::options::{Policy, RunOptions, Workload};
use crate::policy::happy_step;
use crate::runner::{replay, run};

#[test]
fn three_nodes_elect_a_leader_and_commit_on_every_node() {
    let mut cluster = Cluster::new(ClusterOptions::new(3, 1));
    for _ in 0..3000 {
        happy_step(&mut cluster).unwrap_or_else(|failure| panic!("{failure}"));
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
fn happy_runs_of_every_size_commit_and_pass_the_liveness_phase() {
    for nodes in [1, 3, 5, 7] {
        for seed in 0..10 {
            let report = run(&RunOptions::new(seed, nodes, 3_000, Policy::Happy))
                .unwrap_or_else(|failure| panic!("{failure}"));
            assert!(report.coverage.committed > 0, "{nodes} nodes, seed {seed}");
            assert!(report.coverage.writes_acknowledged > 0);
            assert!(report.liveness.is_some());
        }
    }
}

#[test]
fn same_options_same_run() {
    let options = RunOptions::for_seed(
        &Workload::preset("reads").unwrap(),
        99,
        5,
        6_000,
        Policy::Chaos,
    );
    let first = run(&options).unwrap_or_else(|failure| panic!("{failure}"));
    let second = run(&options).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first, second);
    assert!(first.coverage.elections > 0);
}

#[test]
fn a_run_replays_exactly_from_its_text_options() {
    for name in Workload::PRESETS {
        let options =
            RunOptions::for_seed(&Workload::preset(name).unwrap(), 7, 3, 4_000, Policy::Chaos);
        let parsed: RunOptions = options.to_string().parse().unwrap();
        let ran = run(&options).unwrap_or_else(|failure| panic!("{failure}"));
        let mut lines = 0u64;
        let replayed =
            replay(&parsed, &mut |_| lines += 1).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(ran, replayed, "{name}");
        // Most steps print a line; some print none (a flush with nothing pending, a message
        // to a crashed node), which a quiet one-voter configuration makes common.
        assert!(
            lines > ran.steps / 2,
            "{name}: {lines} trace lines for {} steps",
            ran.steps
        );
    }
}
