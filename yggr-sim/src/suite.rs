//! Suites: many seeded runs of one workload, their coverage summed and held to a gate.
//!
//! Seeds are not fixed: each suite run derives them from a base seed, taken from
//! `YGGR_SIM_SEED_BASE` when set and drawn from the operating system otherwise, so every CI
//! run explores new schedules. A failure names its own seed and full options, so it replays
//! whatever the base was. `YGGR_SIM_BUDGET` multiplies the number of runs (and the coverage
//! the gate demands): `1` is the CI budget, `100` a nightly one, `0.1` a quick look (mutation
//! testing uses it).

use std::fmt;
use std::time::{Duration, Instant};

use crate::coverage::{Coverage, CoverageGate};
use crate::harness::SimError;
use crate::options::{Policy, RunOptions, Workload};
use crate::policy::steps_per_election_timeout;
use crate::runner::run;

/// Many runs of one workload.
#[derive(Clone, Debug)]
pub struct Suite {
    /// The suite's name, for reports.
    pub name: String,
    /// What every run does; engine settings are varied per seed when it says so.
    pub workload: Workload,
    /// Cluster sizes, used in turn.
    pub nodes: Vec<u64>,
    /// Runs at budget 1.
    pub runs: u64,
    /// How long each run's chaos phase lasts, in maximum election timeouts (converted to
    /// steps for the run's cluster size and engine settings).
    pub election_timeouts: u64,
    /// What the runs must exercise in total, at budget 1.
    pub gate: CoverageGate,
}

/// What a passing suite exercised.
#[derive(Clone, Debug)]
pub struct SuiteReport {
    /// The suite's name.
    pub name: String,
    /// The base seed the runs' seeds came from.
    pub base_seed: u64,
    /// The runs' coverage, summed.
    pub coverage: Coverage,
    /// Wall-clock time taken.
    pub elapsed: Duration,
}

impl fmt::Display for SuiteReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "suite {} (base seed {}, {:.1} s): {}",
            self.name,
            self.base_seed,
            self.elapsed.as_secs_f64(),
            self.coverage
        )
    }
}

/// Why a suite failed.
#[derive(Clone, Debug)]
pub enum SuiteFailure {
    /// A run broke an invariant or failed to recover.
    Run(SimError),
    /// Every run passed but together they exercised too little.
    Coverage {
        /// The suite's name.
        name: String,
        /// The base seed.
        base_seed: u64,
        /// The counters below their minimum.
        shortfalls: Vec<String>,
        /// What was exercised.
        coverage: Box<Coverage>,
    },
}

impl fmt::Display for SuiteFailure {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuiteFailure::Run(error) => write!(formatter, "{error}"),
            SuiteFailure::Coverage {
                name,
                base_seed,
                shortfalls,
                coverage,
            } => write!(
                formatter,
                "suite {name} (base seed {base_seed}) exercised too little: {}\ncoverage: {coverage}",
                shortfalls.join(", ")
            ),
        }
    }
}

impl std::error::Error for SuiteFailure {}

/// The budget multiplier from `YGGR_SIM_BUDGET` (default 1; fractions allowed).
pub fn budget() -> f64 {
    std::env::var("YGGR_SIM_BUDGET")
        .ok()
        .and_then(|value| value.parse().ok())
        .filter(|budget: &f64| budget.is_finite() && *budget > 0.0)
        .unwrap_or(1.0)
}

/// The base seed from `YGGR_SIM_SEED_BASE`, or a fresh one from the operating system.
pub fn base_seed() -> u64 {
    std::env::var("YGGR_SIM_SEED_BASE")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(rand::random)
}

/// The seed of run `index` of a suite whose base seed is `base`.
pub fn run_seed(base: u64, index: u64) -> u64 {
    let mut value = base ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    value = (value ^ (value >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    value ^ (value >> 33)
}

impl Suite {
    /// The suites CI runs, by workload preset name (see [`Workload::preset`]): 600 runs each
    /// over 3, 5 and 7 nodes, 15 election timeouts of chaos each, engine settings varied per
    /// seed, and a gate on what they must exercise.
    pub fn preset(name: &str) -> Option<Suite> {
        let workload = Workload::preset(name)?;
        // Minimums at about half of what 600 runs of each suite were measured to exercise.
        let base = CoverageGate {
            empty_runs_per_thousand: 10,
            elections: 1_200,
            writes_acknowledged: 100_000,
            stale_leader_windows: 150,
            requests_at_stale_leaders: 200,
            snapshots_installed: 1_000,
            crashes: 1_000,
            bounces: 800,
            bounces_after_acknowledging: 150,
            messages_delayed: 10_000,
            ..CoverageGate::default()
        };
        let gate = match name {
            "default" => CoverageGate {
                reads_served: 50_000,
                ..base
            },
            "membership" => CoverageGate {
                learners_added: 500,
                promotions: 200,
                leader_removals: 200,
                ..base
            },
            "snapshot" => CoverageGate {
                snapshots_installed: 800,
                long_snapshot_installs: 300,
                ..base
            },
            "reads" => CoverageGate {
                reads_served: 400_000,
                read_bursts: 1_000,
                transfers: 3_000,
                ..base
            },
            "lease" => CoverageGate {
                reads_served: 400_000,
                reads_served_at_once: 300_000,
                read_bursts: 1_000,
                transfers: 3_000,
                ..base
            },
            "transfer" => CoverageGate {
                learners_added: 500,
                promotions: 200,
                leader_removals: 250,
                transfers: 2_500,
                ..base
            },
            _ => base,
        };
        Some(Suite {
            name: name.to_string(),
            workload,
            nodes: vec![3, 5, 7],
            runs: 600,
            election_timeouts: 15,
            gate,
        })
    }

    /// The options of run `index` under `base_seed`.
    pub fn options(&self, base_seed: u64, index: u64) -> RunOptions {
        let seed = run_seed(base_seed, index);
        let nodes = self.nodes[(index % self.nodes.len() as u64) as usize];
        let mut options = RunOptions::for_seed(&self.workload, seed, nodes, 0, Policy::Chaos);
        let timeout = options.workload.engine.election_timeout_max_ticks;
        options.steps = self.election_timeouts * steps_per_election_timeout(nodes, timeout);
        options
    }

    /// Runs every seed (`runs × budget` of them, at least one), stopping at the first failure,
    /// then holds the summed coverage to the gate (scaled by the budget).
    ///
    /// # Errors
    /// [`SuiteFailure`]: the first failing run, or the coverage shortfall.
    pub fn run(&self, base_seed: u64, budget: f64) -> Result<SuiteReport, SuiteFailure> {
        let started = Instant::now();
        let mut coverage = Coverage::default();
        let runs = ((self.runs as f64 * budget).ceil() as u64).max(1);
        for index in 0..runs {
            let options = self.options(base_seed, index);
            let report = run(&options).map_err(SuiteFailure::Run)?;
            coverage += report.coverage;
        }
        let gate = self.gate.scaled(budget);
        let shortfalls = gate.shortfalls(&coverage);
        if !shortfalls.is_empty() {
            return Err(SuiteFailure::Coverage {
                name: self.name.clone(),
                base_seed,
                shortfalls,
                coverage: Box::new(coverage),
            });
        }
        Ok(SuiteReport {
            name: self.name.clone(),
            base_seed,
            coverage,
            elapsed: started.elapsed(),
        })
    }
}
