//! The whole stack under simulation: runs pass, and the same seed repeats exactly.

use crate::stack::{Faults, RegisterWorkload, StackOptions, run_stack};
use crate::suite::{budget, run_seed};

use super::base_seed;

#[test]
fn the_same_seed_gives_the_same_stack_run_event_for_event() {
    let options = StackOptions::from_seed(11);
    let first = run_stack(&RegisterWorkload::default(), &options)
        .unwrap_or_else(|failure| panic!("{failure}"));
    let second = run_stack(&RegisterWorkload::default(), &options)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(first.digest, second.digest, "one seed, two different runs");
    assert_eq!(first.history, second.history);
    let other = run_stack(&RegisterWorkload::default(), &StackOptions::from_seed(12))
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_ne!(
        first.digest, other.digest,
        "the digest does not tell runs apart"
    );
}

#[test]
fn stack_runs_under_chaos_keep_every_acknowledged_write_on_three_and_five_nodes() {
    let base = base_seed();
    let mut elections = 0;
    let mut crashes = 0;
    let mut installed = 0;
    let runs = (10.0 * budget()).ceil() as u64;
    for index in 0..runs {
        let seed = run_seed(base, index);
        let mut options = StackOptions::from_seed(seed);
        options.nodes = if index % 2 == 0 { 3 } else { 5 };
        let report = run_stack(&RegisterWorkload::default(), &options)
            .unwrap_or_else(|failure| panic!("{failure}"));
        elections += report.term;
        crashes += report.faults.crashes;
        installed += report.history.snapshots_installed;
    }
    assert!(
        elections > 0 && crashes > 0 && installed > 0,
        "the runs exercised little: {elections} terms, {crashes} crashes, {installed} snapshots installed"
    );
}

#[test]
fn a_stack_run_without_faults_serves_every_client() {
    let mut options = StackOptions::new(5, 3);
    options.faults = Faults::none();
    let report = run_stack(&RegisterWorkload::default(), &options)
        .unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(report.history.unknown, 0, "no fault, yet outcomes unknown");
    assert!(report.history.acknowledged > 100, "{:?}", report.history);
    assert!(report.history.reads > 0, "{:?}", report.history);
}

/// Registers whose snapshot leaves out the highest key: replicas that never restore one stay
/// right, so only a check of the snapshot itself can see it.
#[derive(Clone, Debug, Default)]
struct LossyRegisters(crate::stack::registers::Registers);

impl yggr::StateMachine for LossyRegisters {
    type Command = crate::stack::registers::RegisterCommand;
    type Response = crate::stack::registers::RegisterValue;

    fn encode_command(command: &Self::Command) -> Vec<u8> {
        crate::stack::registers::Registers::encode_command(command)
    }

    fn decode_command(bytes: &[u8]) -> Result<Self::Command, yggr::DecodeError> {
        crate::stack::registers::Registers::decode_command(bytes)
    }

    fn apply(&mut self, command: Self::Command) -> Self::Response {
        self.0.apply(command)
    }

    fn snapshot(&self) -> Result<Vec<u8>, yggr::SnapshotError> {
        let mut bytes = self.0.snapshot()?;
        bytes.truncate(bytes.len().saturating_sub(16));
        Ok(bytes)
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        self.0.restore(bytes);
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct LossyWorkload(RegisterWorkload);

impl crate::stack::Workload for LossyWorkload {
    type Command = crate::stack::registers::RegisterCommand;
    type Response = crate::stack::registers::RegisterValue;
    type Read = crate::stack::registers::RegisterValue;
    type Machine = LossyRegisters;

    fn state_machine(&self, _node: yggr::NodeId) -> LossyRegisters {
        LossyRegisters::default()
    }

    fn command(&self, draw: &mut crate::stack::Draw) -> Self::Command {
        self.0.command(draw)
    }

    fn keys(&self) -> u64 {
        self.0.keys()
    }

    fn read(&self, state: &LossyRegisters, key: u64) -> Option<Self::Read> {
        self.0.read(&state.0, key)
    }
}

/// A snapshot that loses part of the state fails the run even when no node restores one:
/// every replica's snapshot is restored into a fresh state machine at each barrier and read
/// back key by key.
#[test]
fn a_snapshot_that_loses_state_fails_the_run_even_if_never_restored() {
    let mut options = StackOptions::new(5, 3);
    options.faults = Faults::none();
    let failure = run_stack(&LossyWorkload::default(), &options)
        .expect_err("the lossy snapshot went unnoticed");
    assert!(
        failure
            .reason
            .contains("a snapshot restored into a fresh state machine"),
        "{failure}"
    );
}

#[test]
fn a_run_past_its_wall_time_limit_fails_saying_so() {
    let mut options = StackOptions::from_seed(3);
    options.wall_time_limit = std::time::Duration::ZERO;
    let failure = run_stack(&RegisterWorkload::default(), &options)
        .expect_err("a run with no wall time left must fail");
    assert!(failure.reason.contains("wall time"), "{failure}");
}

#[test]
fn crash_point_sweeps_replay_exactly_and_cover_installs_that_replace_a_log() {
    let mut in_installs = 0;
    for seed in 0..20 {
        let report =
            crate::stack::run_crash_points(seed).unwrap_or_else(|failure| panic!("{failure}"));
        assert_eq!(
            Ok(report),
            crate::stack::run_crash_points(seed),
            "seed {seed} ran differently twice"
        );
        in_installs += report.in_installs_replacing_a_log;
    }
    assert!(
        in_installs > 0,
        "no crash point fell in an install replacing a log"
    );
}
