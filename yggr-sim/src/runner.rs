//! One run from its options: [`run`] checks it, [`replay`] checks it again and shows every
//! step.

use crate::checker::{Invariant, Violation};
use crate::coverage::Coverage;
use crate::harness::{Cluster, ClusterOptions, SimError};
use crate::liveness::{self, LivenessReport};
use crate::network::NetworkFaults;
use crate::options::RunOptions;
use crate::policy::Schedule;
use crate::trace::Trace;

/// What a completed run exercised and measured.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Steps taken, liveness phase included.
    pub steps: u64,
    /// What the run exercised.
    pub coverage: Coverage,
    /// The liveness phase's measurements, when it ran.
    pub liveness: Option<LivenessReport>,
}

/// Runs one seeded schedule, checking every invariant after every step, then (unless
/// `options.liveness` is off) heals the cluster and checks that it recovers.
///
/// # Errors
/// [`SimError`] at the first violated invariant, with the full options and a replay command.
///
/// # Panics
/// If `options` fail [`RunOptions::validate`]: a run of nothing, or of a broken
/// configuration, is a mistake in the test, not a finding.
pub fn run(options: &RunOptions) -> Result<RunReport, SimError> {
    run_traced(options, Trace::disabled(), &mut |_| {})
}

/// Runs `options` again with a trace of every event, action and injected fault, handing each
/// line to `sink` as it happens. Works for any options, including those a failure carries in
/// [`SimError::options`]: this is how a failure seen in another crate is replayed.
///
/// # Errors
/// As [`run`]: the same failure at the same step.
///
/// # Panics
/// As [`run`].
pub fn replay(options: &RunOptions, sink: &mut dyn FnMut(String)) -> Result<RunReport, SimError> {
    run_traced(options, Trace::enabled(), sink)
}

fn run_traced(
    options: &RunOptions,
    trace: Trace,
    sink: &mut dyn FnMut(String),
) -> Result<RunReport, SimError> {
    if let Err(error) = options.validate() {
        panic!("invalid run options ({error}): {options}");
    }
    let mut cluster = build(options);
    cluster.trace = trace;
    let mut schedule = Schedule::new(options, &mut cluster);
    // An engine assertion is a finding like any violation: report it with the seed and the
    // replay command rather than unwinding out of the suite with neither.
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drive(&mut cluster, &mut schedule, options, sink)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        Err(cluster.violation(Violation {
            invariant: Invariant::EngineInvariant,
            detail: format!("the engine panicked: {message}"),
        }))
    });
    for line in cluster.trace.take_lines() {
        sink(line);
    }
    let liveness = outcome?;
    Ok(report(&cluster, liveness))
}

/// The cluster a run starts from.
pub fn build(options: &RunOptions) -> Cluster {
    let mut cluster = Cluster::new(ClusterOptions {
        nodes: options.nodes,
        seed: options.seed,
        faults: NetworkFaults::NONE,
        joiners: options.workload.spare_nodes,
        engine: options.workload.engine.clone(),
        snapshot_bytes: options.workload.snapshot_bytes,
    });
    cluster.run_options = Some(options.clone());
    cluster
}

fn drive(
    cluster: &mut Cluster,
    schedule: &mut Schedule,
    options: &RunOptions,
    sink: &mut dyn FnMut(String),
) -> Result<Option<LivenessReport>, SimError> {
    while schedule.counted_steps(cluster) < options.steps {
        schedule.step(cluster)?;
        for line in cluster.trace.take_lines() {
            sink(line);
        }
    }
    // A chaos phase that committed nothing tested little: counted, and held to a maximum by
    // suites (an occasional schedule is hostile enough to earn it).
    cluster.coverage.empty_runs = u64::from(cluster.checker.max_committed().get() == 0);
    if !options.liveness {
        return Ok(None);
    }
    cluster.trace.note(
        cluster.step_count,
        "liveness phase: heal everything".to_string(),
    );
    liveness::heal_and_check(cluster, schedule).map(Some)
}

/// The summary of a finished run.
pub fn report(cluster: &Cluster, liveness: Option<LivenessReport>) -> RunReport {
    let mut coverage = cluster.coverage;
    let (acknowledged, refused, indeterminate, _) = cluster.history.tally();
    coverage.runs = 1;
    coverage.steps = cluster.step_count;
    coverage.elections = cluster.checker.terms_with_leader() as u64;
    coverage.committed = cluster.checker.max_committed().get();
    coverage.writes_acknowledged = acknowledged;
    coverage.writes_refused = refused;
    coverage.writes_indeterminate = indeterminate;
    coverage.liveness_ticks = liveness.map_or(0, |report| report.ticks_to_serve);
    RunReport {
        steps: cluster.step_count,
        coverage,
        liveness,
    }
}
