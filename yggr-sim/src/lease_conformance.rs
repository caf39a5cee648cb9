//! Lease conformance: a leader and its voters with clocks at the very edge of the drift a lease
//! allows, and the leader cut off right after its round was acknowledged, while reads keep
//! arriving at it.
//!
//! A lease of `l` ticks, with voters that refuse votes for `e` ticks after hearing from a
//! leader (`e`: the minimum election timeout), is safe when every clock runs within `1 ± d`
//! of real time with `d = (m - l) / (m + l)` and `m = e - 1`
//! ([`Clocks::lease_safe_drift`](crate::Clocks::lease_safe_drift) derives it; cluster runs
//! stay a little below it). Here every clock runs exactly at one edge, in whole numbers: per
//! instant a slow clock advances by `l` and a fast one by `m`, and a tick takes `l · m`. A slow
//! clock ticks every `m` instants, a fast one every `l`, and `m / l` is exactly
//! `(1 + d) / (1 - d)`. A slow leader's lease then spans `l · m` instants from the tick that
//! sent its round, and a fast voter that acknowledged that round refuses votes until its
//! `e`-th tick after it, more than `m · l` instants later: the bound leaves no room to spare,
//! and a lease one tick longer outlasts the refusal of every fast voter it counts.
//!
//! Each run builds a cluster of 3 or 5 real engines (simulated disks, the host's
//! persist-before-send order) with settings drawn from the seed, on a network without faults
//! or latency. Within an instant every tick due is handled before any message or read. Then,
//! episode after episode:
//!
//! - every clock runs fast until a leader has committed in its term;
//! - the episode's rates are drawn: usually the leader slow and every other clock fast (the
//!   direction that strains a lease), otherwise each clock at either edge;
//! - right after one of the leader's ticks everything in flight is delivered, so its latest
//!   round is acknowledged; now and then one follower is restarted the moment it has sent its
//!   acknowledgement, which is still on its way to the leader;
//! - the leader is cut off from everyone and a read arrives at it every instant, until well
//!   past its lease, sometimes until the others have elected a new leader; then the network
//!   heals.
//!
//! After every step every cluster invariant is checked, among them
//! [`Invariant::LeaseRefusals`](crate::Invariant::LeaseRefusals): a read served by the lease
//! while a voter it counts would grant a vote fails the run. `run_leases(seed, episodes)`
//! replays a failure; [`replay_leases`] prints every step of it.

use std::fmt;
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{EngineConfig, Event, NodeId};

use crate::conformance::{ConformanceFailure, ScriptedCoverage, run_scripted};
use crate::harness::{Cluster, ClusterOptions, SimError};
use crate::network::NetworkFaults;
use crate::state_machine::SNAPSHOT_HEADER_BYTES;
use crate::trace::Trace;

/// What lease-conformance runs exercised, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseCoverage {
    /// Leaders cut off right after a round of theirs was acknowledged.
    pub cut_offs: u64,
    /// Reads served by a lease, each checked against its voters' refusals.
    pub lease_reads: u64,
    /// Cut-offs during which reads were served by the lease up to one instant and not after
    /// it: the lease's end, met by a read on each side.
    pub lease_ends: u64,
    /// Lease ends met with the leader's clock slow and a voter's fast, both at the bound.
    pub lease_ends_at_the_bound: u64,
    /// Followers restarted the moment they had sent an acknowledgement, with it still on its
    /// way to the leader.
    pub restarts_after_acknowledging: u64,
    /// Cut-offs that lasted until the others elected a new leader.
    pub new_leaders: u64,
}

impl LeaseCoverage {
    fn counters(&self) -> [(&'static str, u64); 6] {
        [
            ("cut_offs", self.cut_offs),
            ("lease_reads", self.lease_reads),
            ("lease_ends", self.lease_ends),
            ("lease_ends_at_the_bound", self.lease_ends_at_the_bound),
            (
                "restarts_after_acknowledging",
                self.restarts_after_acknowledging,
            ),
            ("new_leaders", self.new_leaders),
        ]
    }

    fn map(&self, other: &LeaseCoverage, combine: impl Fn(u64, u64) -> u64) -> LeaseCoverage {
        LeaseCoverage {
            cut_offs: combine(self.cut_offs, other.cut_offs),
            lease_reads: combine(self.lease_reads, other.lease_reads),
            lease_ends: combine(self.lease_ends, other.lease_ends),
            lease_ends_at_the_bound: combine(
                self.lease_ends_at_the_bound,
                other.lease_ends_at_the_bound,
            ),
            restarts_after_acknowledging: combine(
                self.restarts_after_acknowledging,
                other.restarts_after_acknowledging,
            ),
            new_leaders: combine(self.new_leaders, other.new_leaders),
        }
    }
}

impl fmt::Display for LeaseCoverage {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "cut-offs {}, lease reads {}, lease ends {} ({} at the bound), restarts after \
             acknowledging {}, new leaders {}",
            self.cut_offs,
            self.lease_reads,
            self.lease_ends,
            self.lease_ends_at_the_bound,
            self.restarts_after_acknowledging,
            self.new_leaders
        )
    }
}

impl ScriptedCoverage for LeaseCoverage {
    fn add_run(&mut self, other: &Self) {
        *self = self.map(other, |a, b| a + b);
    }
    fn shortfalls_against(&self, gate: &Self) -> Vec<String> {
        self.counters()
            .into_iter()
            .zip(gate.counters())
            .filter(|((_, seen), (_, minimum))| seen < minimum)
            .map(|((name, seen), (_, minimum))| format!("{name}: {seen} < {minimum}"))
            .collect()
    }
    fn scaled_by(&self, budget: f64) -> Self {
        self.map(self, |minimum, _| (minimum as f64 * budget).floor() as u64)
    }
}

/// Runs of the lease-conformance suite and what they must exercise.
#[derive(Clone, Debug)]
pub struct LeaseSuite {
    /// Runs at budget 1.
    pub runs: u64,
    /// Cut-offs per run.
    pub episodes: u64,
    /// The least the runs must exercise together at budget 1.
    pub gate: LeaseCoverage,
}

impl Default for LeaseSuite {
    /// 300 runs of 20 episodes, gated at about half of what that was measured to exercise.
    fn default() -> Self {
        LeaseSuite {
            runs: 300,
            episodes: 20,
            gate: LeaseCoverage {
                cut_offs: 2_400,
                lease_reads: 100_000,
                lease_ends: 2_200,
                lease_ends_at_the_bound: 1_700,
                restarts_after_acknowledging: 900,
                new_leaders: 1_400,
            },
        }
    }
}

/// What a passing lease suite exercised.
#[derive(Clone, Debug)]
pub struct LeaseReport {
    /// The base seed the runs' seeds came from.
    pub base_seed: u64,
    /// The runs' coverage, summed.
    pub coverage: LeaseCoverage,
    /// Wall-clock time taken.
    pub elapsed: Duration,
}

impl fmt::Display for LeaseReport {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "suite lease-bound (base seed {}, {:.1} s): {}",
            self.base_seed,
            self.elapsed.as_secs_f64(),
            self.coverage
        )
    }
}

impl LeaseSuite {
    /// Runs `runs × budget` seeds derived from `base_seed` (at least one), stopping at the
    /// first failure, then holds the summed coverage to the gate scaled by `budget`.
    ///
    /// # Errors
    /// [`ConformanceFailure`]: the first violation, or the coverage shortfall.
    pub fn run(&self, base_seed: u64, budget: f64) -> Result<LeaseReport, ConformanceFailure> {
        let started = Instant::now();
        let coverage = run_scripted(base_seed, budget, self.runs, &self.gate, |seed| {
            run_leases(seed, self.episodes)
        })?;
        Ok(LeaseReport {
            base_seed,
            coverage,
            elapsed: started.elapsed(),
        })
    }
}

/// One scripted run of `episodes` cut-offs. Returns what it exercised.
///
/// # Errors
/// [`ConformanceFailure::Violation`]: a cluster invariant broke, or the cluster found no
/// leader on a perfect network.
pub fn run_leases(seed: u64, episodes: u64) -> Result<LeaseCoverage, ConformanceFailure> {
    run_leases_traced(seed, episodes, Trace::disabled(), &mut |_| {})
}

/// [`run_leases`] again, handing every traced step to `sink`.
///
/// # Errors
/// As [`run_leases`]: the same failure at the same step.
pub fn replay_leases(
    seed: u64,
    episodes: u64,
    sink: &mut dyn FnMut(String),
) -> Result<LeaseCoverage, ConformanceFailure> {
    run_leases_traced(seed, episodes, Trace::enabled(), sink)
}

fn run_leases_traced(
    seed: u64,
    episodes: u64,
    trace: Trace,
    sink: &mut dyn FnMut(String),
) -> Result<LeaseCoverage, ConformanceFailure> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x1ea5_e000_b0bd);
    let engine = settings(&mut rng);
    let nodes = if rng.random_bool(0.5) { 3 } else { 5 };
    let mut cluster = Cluster::new(ClusterOptions {
        nodes,
        seed,
        faults: NetworkFaults::NONE,
        joiners: 0,
        engine: engine.clone(),
        snapshot_bytes: SNAPSHOT_HEADER_BYTES,
    });
    cluster.trace = trace;
    let clocks = EdgeClocks::new(&engine, &cluster.ids(), &mut rng);
    let mut script = Script {
        cluster,
        clocks,
        rng,
        engine,
        coverage: LeaseCoverage::default(),
    };
    let outcome = (0..episodes).try_for_each(|_| script.episode());
    for line in script.cluster.trace.take_lines() {
        sink(line);
    }
    outcome.map_err(|error| ConformanceFailure::Violation {
        replay: "yggr_sim::lease_conformance::replay_leases",
        seed,
        steps: episodes,
        step: error.step,
        detail: error.violation.to_string(),
    })?;
    script.coverage.lease_reads = script.cluster.coverage.lease_reads_checked;
    Ok(script.coverage)
}

/// Engine settings for one run, drawn as the cluster suites draw theirs, with a lease of any
/// length the configuration accepts.
fn settings(rng: &mut ChaCha8Rng) -> EngineConfig {
    let election_timeout_min_ticks = rng.random_range(8..=14);
    let heartbeat_interval_ticks = rng.random_range(1..=3);
    let limit = election_timeout_min_ticks - heartbeat_interval_ticks;
    let engine = EngineConfig {
        election_timeout_min_ticks,
        election_timeout_max_ticks: election_timeout_min_ticks + rng.random_range(2..=10),
        heartbeat_interval_ticks,
        pre_vote: rng.random_bool(0.75),
        max_entries_per_append: [1, 8, 256][rng.random_range(0..3)],
        lease_duration_ticks: rng.random_range(1..limit),
        ..EngineConfig::default()
    };
    debug_assert_eq!(engine.validate(), Ok(()));
    engine
}

/// Every node's clock at one edge of the drift bound, in whole numbers (see the module
/// documentation): a slow clock advances `slow` per instant, a fast one `fast`, and a tick
/// takes `slow · fast`.
#[derive(Clone, Debug)]
struct EdgeClocks {
    slow: u64,
    fast: u64,
    /// Each node, its advance per instant, and its progress into its next tick.
    clocks: Vec<(NodeId, u64, u64)>,
}

impl EdgeClocks {
    fn new(engine: &EngineConfig, ids: &[NodeId], rng: &mut ChaCha8Rng) -> EdgeClocks {
        let slow = engine.lease_duration_ticks;
        let fast = engine.election_timeout_min_ticks - 1;
        assert!(slow < fast, "a valid lease is shorter than m = e - 1");
        let tick = slow * fast;
        let clocks = ids
            .iter()
            .map(|id| (*id, fast, rng.random_range(0..tick)))
            .collect();
        EdgeClocks { slow, fast, clocks }
    }

    fn tick(&self) -> u64 {
        self.slow * self.fast
    }

    fn set_rate(&mut self, node: NodeId, slow: bool) {
        let rate = if slow { self.slow } else { self.fast };
        for clock in &mut self.clocks {
            if clock.0 == node {
                clock.1 = rate;
            }
        }
    }

    fn is_slow(&self, node: NodeId) -> bool {
        self.clocks
            .iter()
            .any(|(id, rate, _)| *id == node && *rate == self.slow)
    }

    /// Instants one tick of `node`'s clock takes at its rate.
    fn instants_per_tick(&self, node: NodeId) -> u64 {
        if self.is_slow(node) {
            self.fast
        } else {
            self.slow
        }
    }
}

/// One run in progress.
struct Script {
    cluster: Cluster,
    clocks: EdgeClocks,
    rng: ChaCha8Rng,
    engine: EngineConfig,
    coverage: LeaseCoverage,
}

/// The most deliveries one instant may take before the script gives up on it: a network
/// without faults settles in far fewer.
const MAX_DELIVERIES_PER_INSTANT: u64 = 100_000;

impl Script {
    /// One instant: every tick due, in node order, then everything in flight delivered (or
    /// dropped by the partition).
    fn instant(&mut self) -> Result<(), SimError> {
        self.ticks(None)?;
        self.deliver_everything()
    }

    /// The ticks of one instant, in node order. Returns whether `watched` ticked.
    fn ticks(&mut self, watched: Option<NodeId>) -> Result<bool, SimError> {
        let tick = self.clocks.tick();
        let mut watched_ticked = false;
        for position in 0..self.clocks.clocks.len() {
            let (node, rate, _) = self.clocks.clocks[position];
            self.clocks.clocks[position].2 += rate;
            while self.clocks.clocks[position].2 >= tick {
                self.clocks.clocks[position].2 -= tick;
                self.cluster.step_node(node, Event::Tick)?;
                watched_ticked |= Some(node) == watched;
            }
        }
        Ok(watched_ticked)
    }

    fn deliver_everything(&mut self) -> Result<(), SimError> {
        for _ in 0..MAX_DELIVERIES_PER_INSTANT {
            self.cluster.flush_all()?;
            if !self.cluster.deliver_one()? {
                return Ok(());
            }
        }
        panic!("the network did not settle within one instant");
    }

    /// The leader, once exactly one node leads and it has committed in its term.
    fn ready_leader(&self) -> Option<NodeId> {
        let [leader] = self.cluster.believed_leaders()[..] else {
            return None;
        };
        let engine = self.cluster.engine(leader)?;
        (engine.term_at(engine.commit_index()) == Some(engine.current_term())).then_some(leader)
    }

    /// Runs every clock fast (all at one rate, so no follower outpaces a healthy leader) until
    /// a leader is ready.
    fn settle(&mut self) -> Result<NodeId, SimError> {
        for node in self.cluster.ids() {
            self.clocks.set_rate(node, false);
        }
        let limit = 100 * self.engine.election_timeout_max_ticks * self.clocks.slow;
        for _ in 0..limit {
            if let Some(leader) = self.ready_leader() {
                return Ok(leader);
            }
            self.instant()?;
        }
        Err(self.cluster.violation(crate::Violation {
            invariant: crate::Invariant::Liveness,
            detail: format!("no leader within {limit} instants on a perfect network"),
        }))
    }

    fn episode(&mut self) -> Result<(), SimError> {
        let leader = self.settle()?;
        // The episode's rates: usually the direction that strains a lease.
        let strained = self.rng.random_bool(0.6);
        for node in self.cluster.ids() {
            let slow = if strained {
                node == leader
            } else {
                self.rng.random_bool(0.5)
            };
            self.clocks.set_rate(node, slow);
        }
        // A few of the leader's ticks at these rates, then the cut-off right after one that
        // sent a heartbeat round (or after a few heartbeat intervals' worth, if none did).
        let ticks = self
            .rng
            .random_range(1..=2 * self.engine.heartbeat_interval_ticks);
        let mut ticked = 0;
        loop {
            let leader_ticked = self.ticks(Some(leader))?;
            ticked += u64::from(leader_ticked);
            let heartbeat = leader_ticked && !self.cluster.network.is_empty();
            if ticked >= ticks
                && (heartbeat || ticked >= ticks + 3 * self.engine.heartbeat_interval_ticks)
            {
                break;
            }
            self.deliver_everything()?;
        }
        if self.cluster.leader() != Some(leader) {
            return self.deliver_everything();
        }
        if self.rng.random_bool(0.4) {
            self.restart_the_next_acknowledger(leader)?;
        }
        self.deliver_everything()?;
        self.cut_off(leader)
    }

    /// Delivers messages one at a time until a follower sends an acknowledgement, then
    /// restarts that follower at once, its answer still on the way.
    fn restart_the_next_acknowledger(&mut self, leader: NodeId) -> Result<(), SimError> {
        self.cluster.last_round_acknowledger = None;
        for _ in 0..MAX_DELIVERIES_PER_INSTANT {
            self.cluster.flush_all()?;
            if let Some(follower) = self.cluster.last_round_acknowledger.take()
                && follower != leader
            {
                self.coverage.restarts_after_acknowledging += 1;
                return self.cluster.bounce(follower);
            }
            if !self.cluster.deliver_one()? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Cuts `leader` off and sends it a read every instant, until well past its lease or, now
    /// and then, until the others elect a new leader; then heals.
    fn cut_off(&mut self, leader: NodeId) -> Result<(), SimError> {
        self.coverage.cut_offs += 1;
        let at_the_bound = self.clocks.is_slow(leader)
            && self
                .cluster
                .ids()
                .iter()
                .any(|node| *node != leader && !self.clocks.is_slow(*node));
        let term = self
            .cluster
            .engine(leader)
            .map(yggr_core::Engine::current_term);
        let lease = self.engine.lease_duration_ticks;
        let leader_ticks = if self.rng.random_bool(0.25) {
            3 * self.engine.election_timeout_max_ticks
        } else {
            lease + 2
        };
        let instants = leader_ticks * self.clocks.instants_per_tick(leader);
        self.cluster.isolate(leader);
        let mut served_before = false;
        let mut lease_ended = false;
        for _ in 0..instants {
            self.instant()?;
            // Reads go to the cut-off leader for as long as it believes it leads.
            if self.cluster.believed_leaders().contains(&leader) {
                let at_once = self.cluster.coverage.reads_served_at_once;
                self.cluster.propose_read(leader)?;
                let served = self.cluster.coverage.reads_served_at_once > at_once;
                lease_ended |= served_before && !served;
                served_before |= served;
            }
        }
        if lease_ended {
            self.coverage.lease_ends += 1;
            self.coverage.lease_ends_at_the_bound += u64::from(at_the_bound);
        }
        let newest = self.cluster.checker.newest_leader_term();
        if newest.is_some() && newest > term {
            self.coverage.new_leaders += 1;
        }
        self.cluster.heal();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_clocks_run_at_exactly_the_drift_bound() {
        // l = 6, e = 10: m = 9, d = 3/15. A slow clock ticks every 9 instants and a fast one
        // every 6, so fast / slow = 9 / 6 = (1 + d) / (1 - d).
        let engine = EngineConfig {
            lease_duration_ticks: 6,
            ..EngineConfig::default()
        };
        let ids = [NodeId::new(1).unwrap(), NodeId::new(2).unwrap()];
        let mut clocks = EdgeClocks::new(&engine, &ids, &mut ChaCha8Rng::seed_from_u64(1));
        clocks.set_rate(ids[0], true);
        assert_eq!(clocks.instants_per_tick(ids[0]), 9);
        assert_eq!(clocks.instants_per_tick(ids[1]), 6);
        let drift = 1.0 - 2.0 * 6.0 / (6.0 + 9.0);
        assert!((drift - 0.2f64).abs() < 1e-12);
    }

    #[test]
    fn short_runs_of_a_correct_engine_pass_and_meet_the_lease_end_at_the_bound() {
        let mut total = LeaseCoverage::default();
        for seed in 0..20 {
            total.add_run(&run_leases(seed, 10).unwrap_or_else(|failure| panic!("{failure}")));
        }
        assert!(total.lease_reads > 0, "{total}");
        assert!(total.lease_ends_at_the_bound > 0, "{total}");
        assert!(total.restarts_after_acknowledging > 0, "{total}");
    }
}
