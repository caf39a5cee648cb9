//! What defines a run: [`RunOptions`] and the [`Workload`] it carries, with named presets and a
//! complete text form, so that a failure printed by one crate replays exactly in another.
//!
//! The text form is a list of `key=value` pairs separated by spaces; [`RunOptions`]'s
//! `Display` writes every key and `FromStr` reads them back (missing keys take their
//! defaults). It is what a failure's replay command carries.

use std::fmt;
use std::str::FromStr;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::EngineConfig;

/// How the next step is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// No faults: messages arrive in order and writes are flushed after every step.
    Happy,
    /// Every fault the simulator has, at rates drawn from the seed.
    Chaos,
}

impl Policy {
    /// Parses `happy` or `chaos`.
    pub fn parse(name: &str) -> Option<Policy> {
        match name {
            "happy" => Some(Policy::Happy),
            "chaos" => Some(Policy::Chaos),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Policy::Happy => "happy",
            Policy::Chaos => "chaos",
        }
    }
}

/// How the nodes' clocks advance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Clocks {
    /// Each tick goes to a node chosen at random: clock rates are unrelated, drift unbounded.
    /// Safe for everything but leases, which assume bounded drift.
    Independent,
    /// One simulated time for all; each node's clock runs at its own rate, drawn from the seed
    /// within `1 ± max_drift_per_mille / 1000` of real time.
    Drifting {
        /// The largest deviation of any clock's rate from real time, in thousandths.
        max_drift_per_mille: u16,
    },
}

impl Clocks {
    /// Drifting clocks at the largest drift `engine`'s lease tolerates.
    pub fn for_lease(engine: &EngineConfig) -> Clocks {
        Clocks::Drifting {
            max_drift_per_mille: Clocks::lease_safe_drift(
                engine.lease_duration_ticks,
                engine.election_timeout_min_ticks,
            ),
        }
    }

    /// The largest drift a lease of `lease` ticks tolerates with a minimum election timeout of
    /// `election_min` ticks, in thousandths, a hair below the exact bound.
    ///
    /// A voter that acknowledged the leader refuses other candidates until its `election_min`-th
    /// tick after that, at least `(election_min - 1) / rate_voter` later in real time; the
    /// leader stops using the round by its `lease`-th tick, at most `lease / rate_leader` after
    /// sending it. Safety needs `lease * rate_voter <= (election_min - 1) * rate_leader`, which
    /// holds for any two rates within `1 ± (m - l) / (m + l)` where `m = election_min - 1`.
    pub fn lease_safe_drift(lease: u64, election_min: u64) -> u16 {
        let margin = election_min.saturating_sub(1);
        if lease == 0 || margin <= lease {
            return 0;
        }
        let bound = (margin - lease) as f64 / (margin + lease) as f64;
        // Ninety-nine hundredths of the bound: cluster runs keep their clocks' phases in
        // floating point, whose rounding must never decide a run. The exact bound, in whole
        // numbers, is the lease-bound conformance suite's (`lease_conformance`).
        (bound * 990.0).floor() as u16
    }
}

/// What the cluster is asked to do besides replicating commands, and the engine settings it
/// runs with. The rates of each activity are drawn from the seed (see
/// [`ChaosRates`](crate::ChaosRates)); these flags say which activities happen at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The preset's name (or `custom`), for reports.
    pub name: String,
    /// Propose membership changes between 1 and 7 voters: add learners and voters, promote
    /// learners (sometimes while cut off from them), remove voters including the leader, and
    /// re-add removed nodes.
    pub membership_changes: bool,
    /// Extra nodes, with ids after the founders, that start as joiners with an empty
    /// configuration and wait for a leader to add them.
    pub spare_nodes: u64,
    /// Chance per step, in thousandths, that a node snapshots its state machine.
    pub snapshot_per_mille: u16,
    /// Size of the state machine's snapshot in bytes (at least 16). With small chunks a large
    /// snapshot takes many round trips, longer than an election timeout.
    pub snapshot_bytes: usize,
    /// Send linearizable reads and check what they observe.
    pub reads: bool,
    /// Now and then, send a burst of reads far larger than any internal window.
    pub read_bursts: bool,
    /// Ask leaders to transfer leadership to random nodes.
    pub transfers: bool,
    /// How clocks advance. Leases need [`Clocks::Drifting`] within their bound.
    pub clocks: Clocks,
    /// Now and then, cut the leader off from everyone for several election timeouts, so that
    /// a deposed leader keeps acting as one while another is elected.
    pub isolate_leader: bool,
    /// Hold some messages back for a long time and deliver them late, and duplicate some.
    pub long_delays: bool,
    /// Let the suite vary engine settings per seed (see [`Workload::for_seed`]).
    pub vary_engine: bool,
    /// The engine configuration every node uses.
    pub engine: EngineConfig,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "default".to_string(),
            membership_changes: false,
            spare_nodes: 0,
            snapshot_per_mille: 10,
            snapshot_bytes: 16,
            reads: true,
            read_bursts: false,
            transfers: false,
            clocks: Clocks::Independent,
            isolate_leader: true,
            long_delays: true,
            vary_engine: false,
            engine: EngineConfig::default(),
        }
    }
}

impl Workload {
    /// The names [`Workload::preset`] knows.
    pub const PRESETS: [&'static str; 6] = [
        "default",
        "membership",
        "snapshot",
        "reads",
        "lease",
        "transfer",
    ];

    /// A named preset, as the suites use them. Every preset has crashes, partial fsyncs,
    /// drops, duplicates, reordering, partitions, long delays and leader isolation:
    /// - `default`: commands, occasional snapshots and reads;
    /// - `membership`: membership churn between 1 and 7 voters with learners and joiners;
    /// - `snapshot`: frequent snapshots of 2 KiB in 32-byte chunks, so transfers outlast
    ///   election timeouts;
    /// - `reads`: ReadIndex reads with bursts, and leadership transfers;
    /// - `lease`: the same with a leader lease, clocks drifting within the lease's bound;
    /// - `transfer`: transfers together with membership changes.
    ///
    /// Presets vary engine settings per seed ([`Workload::vary_engine`]); a workload built from
    /// [`Workload::default`] does not.
    pub fn preset(name: &str) -> Option<Workload> {
        let base = Workload {
            name: name.to_string(),
            vary_engine: true,
            ..Workload::default()
        };
        let workload = match name {
            "default" => base,
            "membership" => Workload {
                membership_changes: true,
                spare_nodes: 2,
                ..base
            },
            "snapshot" => Workload {
                snapshot_per_mille: 40,
                snapshot_bytes: 2048,
                engine: EngineConfig {
                    snapshot_chunk_size_bytes: 32,
                    ..EngineConfig::default()
                },
                ..base
            },
            "reads" => Workload {
                read_bursts: true,
                transfers: true,
                ..base
            },
            "lease" => {
                let engine = EngineConfig {
                    lease_duration_ticks: 6,
                    ..EngineConfig::default()
                };
                Workload {
                    read_bursts: true,
                    transfers: true,
                    clocks: Clocks::for_lease(&engine),
                    engine,
                    ..base
                }
            }
            "transfer" => Workload {
                transfers: true,
                membership_changes: true,
                spare_nodes: 1,
                ..base
            },
            _ => return None,
        };
        Some(workload)
    }

    /// This workload with engine settings varied by `seed` when [`Workload::vary_engine`] is
    /// set: one or many entries per AppendEntries, a narrow or wide pipeline, pre-vote on or
    /// off (kept on where the workload needs it), and different timeouts and chunk sizes. A
    /// lease keeps its place below the election timeout and the clocks keep its drift bound.
    /// The result has `vary_engine` cleared: its engine settings are final.
    pub fn for_seed(&self, seed: u64) -> Workload {
        let mut workload = self.clone();
        workload.vary_engine = false;
        if !self.vary_engine {
            return workload;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x00e7_91e5_0f7a_11ed);
        let base = &self.engine;
        let mut engine = base.clone();
        engine.max_entries_per_append = [1, 2, 8, 256][rng.random_range(0..4)];
        engine.max_inflight_appends = [1, 2, 4, 32][rng.random_range(0..4)];
        engine.heartbeat_interval_ticks = rng.random_range(1..=3);
        engine.election_timeout_min_ticks = rng.random_range(8..=14);
        engine.election_timeout_max_ticks =
            engine.election_timeout_min_ticks + rng.random_range(2..=10);
        engine.pre_vote = rng.random_bool(0.75);
        if base.snapshot_chunk_size_bytes < 1024 {
            engine.snapshot_chunk_size_bytes = [4, 16, 32, 64][rng.random_range(0..4)];
        }
        if base.lease_duration_ticks > 0 {
            let limit = engine.election_timeout_min_ticks - engine.heartbeat_interval_ticks;
            engine.lease_duration_ticks = rng.random_range(1..limit);
            workload.clocks = Clocks::for_lease(&engine);
        }
        debug_assert_eq!(engine.validate(), Ok(()));
        workload.engine = engine;
        workload
    }
}

/// Everything that defines a run; the same options replay the same run exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Founding voters.
    pub nodes: u64,
    /// Steps of the chaos (or happy) phase.
    pub steps: u64,
    /// The policy.
    pub policy: Policy,
    /// After the steps, heal everything and require the cluster to recover within a bound
    /// (see [`liveness`](crate::liveness)).
    pub liveness: bool,
    /// What else the cluster is asked to do, and its engine settings.
    pub workload: Workload,
}

impl RunOptions {
    /// A run with the default workload (engine settings not varied), liveness phase on.
    pub fn new(seed: u64, nodes: u64, steps: u64, policy: Policy) -> RunOptions {
        RunOptions {
            seed,
            nodes,
            steps,
            policy,
            liveness: true,
            workload: Workload::default(),
        }
    }

    /// Checks what a run needs: at least one node, valid engine settings, a snapshot of at
    /// least 16 bytes, and a lease only with drifting clocks bounded for it.
    ///
    /// # Errors
    /// [`ParseOptionsError`] naming the first problem.
    pub fn validate(&self) -> Result<(), ParseOptionsError> {
        let w = &self.workload;
        if self.nodes == 0 {
            return Err(ParseOptionsError("nodes must be at least 1".to_string()));
        }
        w.engine
            .validate()
            .map_err(|error| ParseOptionsError(format!("engine settings: {error}")))?;
        if w.snapshot_bytes < crate::state_machine::SNAPSHOT_HEADER_BYTES {
            return Err(ParseOptionsError(
                "snapshot_bytes must be at least 16".to_string(),
            ));
        }
        let lease = w.engine.lease_duration_ticks;
        if lease > 0 {
            let safe = Clocks::lease_safe_drift(lease, w.engine.election_timeout_min_ticks);
            let bounded = matches!(
                w.clocks,
                Clocks::Drifting { max_drift_per_mille } if max_drift_per_mille <= safe
            );
            if !bounded {
                return Err(ParseOptionsError(format!(
                    "a lease of {lease} ticks needs clocks=drifting:{safe} or less: a lease is only \
                     safe when clock rates are bounded"
                )));
            }
        }
        Ok(())
    }

    /// The options a suite runs for `seed`: `workload` with its engine settings varied by
    /// the seed (see [`Workload::for_seed`]).
    pub fn for_seed(
        workload: &Workload,
        seed: u64,
        nodes: u64,
        steps: u64,
        policy: Policy,
    ) -> RunOptions {
        RunOptions {
            seed,
            nodes,
            steps,
            policy,
            liveness: true,
            workload: workload.for_seed(seed),
        }
    }
}

impl fmt::Display for RunOptions {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.workload;
        let e = &w.engine;
        let clocks = match w.clocks {
            Clocks::Independent => "independent".to_string(),
            Clocks::Drifting {
                max_drift_per_mille,
            } => format!("drifting:{max_drift_per_mille}"),
        };
        write!(
            formatter,
            "seed={} nodes={} steps={} policy={} liveness={} workload={} membership={} \
             spares={} snapshot_per_mille={} snapshot_bytes={} reads={} read_bursts={} \
             transfers={} clocks={clocks} isolate_leader={} long_delays={} vary_engine={} \
             election_min={} election_max={} heartbeat={} pre_vote={} entries_per_append={} \
             inflight={} chunk={} hint_threshold={} max_log={} lease={}",
            self.seed,
            self.nodes,
            self.steps,
            self.policy.name(),
            self.liveness,
            w.name,
            w.membership_changes,
            w.spare_nodes,
            w.snapshot_per_mille,
            w.snapshot_bytes,
            w.reads,
            w.read_bursts,
            w.transfers,
            w.isolate_leader,
            w.long_delays,
            w.vary_engine,
            e.election_timeout_min_ticks,
            e.election_timeout_max_ticks,
            e.heartbeat_interval_ticks,
            e.pre_vote,
            e.max_entries_per_append,
            e.max_inflight_appends,
            e.snapshot_chunk_size_bytes,
            e.snapshot_hint_threshold_entries,
            e.max_log_entries,
            e.lease_duration_ticks,
        )
    }
}

/// Why [`RunOptions`] (or their text form) were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseOptionsError(String);

impl fmt::Display for ParseOptionsError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.0)
    }
}

impl std::error::Error for ParseOptionsError {}

fn parse_value<T: FromStr>(key: &str, value: &str) -> Result<T, ParseOptionsError> {
    value
        .parse()
        .map_err(|_| ParseOptionsError(format!("{key}={value}: not a valid value")))
}

impl FromStr for RunOptions {
    type Err = ParseOptionsError;

    fn from_str(text: &str) -> Result<RunOptions, ParseOptionsError> {
        let mut options = RunOptions::new(0, 3, 1500, Policy::Chaos);
        let w = &mut options.workload;
        for pair in text.split_whitespace() {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| ParseOptionsError(format!("{pair}: expected key=value")))?;
            match key {
                "seed" => options.seed = parse_value(key, value)?,
                "nodes" => options.nodes = parse_value(key, value)?,
                "steps" => options.steps = parse_value(key, value)?,
                "policy" => {
                    options.policy = Policy::parse(value).ok_or_else(|| {
                        ParseOptionsError(format!("policy={value}: expected happy or chaos"))
                    })?;
                }
                "liveness" => options.liveness = parse_value(key, value)?,
                "workload" => w.name = value.to_string(),
                "membership" => w.membership_changes = parse_value(key, value)?,
                "spares" => w.spare_nodes = parse_value(key, value)?,
                "snapshot_per_mille" => w.snapshot_per_mille = parse_value(key, value)?,
                "snapshot_bytes" => w.snapshot_bytes = parse_value(key, value)?,
                "reads" => w.reads = parse_value(key, value)?,
                "read_bursts" => w.read_bursts = parse_value(key, value)?,
                "transfers" => w.transfers = parse_value(key, value)?,
                "clocks" => {
                    w.clocks = match value.split_once(':') {
                        None if value == "independent" => Clocks::Independent,
                        Some(("drifting", drift)) => Clocks::Drifting {
                            max_drift_per_mille: parse_value(key, drift)?,
                        },
                        _ => {
                            return Err(ParseOptionsError(format!(
                                "clocks={value}: expected independent or drifting:<per mille>"
                            )));
                        }
                    };
                }
                "isolate_leader" => w.isolate_leader = parse_value(key, value)?,
                "long_delays" => w.long_delays = parse_value(key, value)?,
                "vary_engine" => w.vary_engine = parse_value(key, value)?,
                "election_min" => w.engine.election_timeout_min_ticks = parse_value(key, value)?,
                "election_max" => w.engine.election_timeout_max_ticks = parse_value(key, value)?,
                "heartbeat" => w.engine.heartbeat_interval_ticks = parse_value(key, value)?,
                "pre_vote" => w.engine.pre_vote = parse_value(key, value)?,
                "entries_per_append" => w.engine.max_entries_per_append = parse_value(key, value)?,
                "inflight" => w.engine.max_inflight_appends = parse_value(key, value)?,
                "chunk" => w.engine.snapshot_chunk_size_bytes = parse_value(key, value)?,
                "hint_threshold" => {
                    w.engine.snapshot_hint_threshold_entries = parse_value(key, value)?;
                }
                "max_log" => w.engine.max_log_entries = parse_value(key, value)?,
                "lease" => w.engine.lease_duration_ticks = parse_value(key, value)?,
                _ => return Err(ParseOptionsError(format!("{key}: unknown option"))),
            }
        }
        options.validate()?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_round_trips_through_its_text_form() {
        for name in Workload::PRESETS {
            for seed in [0, 1, 42, u64::MAX] {
                let workload = Workload::preset(name).unwrap();
                let options = RunOptions::for_seed(&workload, seed, 5, 4000, Policy::Chaos);
                let text = options.to_string();
                let parsed: RunOptions = text.parse().unwrap();
                assert_eq!(parsed, options, "{text}");
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        assert!("seed=1 colour=blue".parse::<RunOptions>().is_err());
        assert!("seed=x".parse::<RunOptions>().is_err());
        assert!(
            "heartbeat=50".parse::<RunOptions>().is_err(),
            "invalid engine"
        );
        assert!("clocks=drifting".parse::<RunOptions>().is_err());
    }

    #[test]
    fn varied_engine_settings_are_valid_and_keep_leases_safe() {
        let lease = Workload::preset("lease").unwrap();
        for seed in 0..500 {
            let workload = lease.for_seed(seed);
            assert_eq!(workload.engine.validate(), Ok(()));
            assert!(workload.engine.lease_duration_ticks > 0);
            let Clocks::Drifting {
                max_drift_per_mille,
            } = workload.clocks
            else {
                panic!("a lease needs bounded drift");
            };
            assert_eq!(
                max_drift_per_mille,
                Clocks::lease_safe_drift(
                    workload.engine.lease_duration_ticks,
                    workload.engine.election_timeout_min_ticks
                )
            );
            assert!(max_drift_per_mille > 0);
        }
    }

    #[test]
    fn lease_drift_bound_is_the_derived_rate_ratio() {
        // m = 9, l = 6: (9 - 6) / (9 + 6) = 0.2, ninety-nine hundredths of it 0.198.
        assert_eq!(Clocks::lease_safe_drift(6, 10), 198);
        assert_eq!(Clocks::lease_safe_drift(0, 10), 0);
        assert_eq!(Clocks::lease_safe_drift(9, 10), 0);
    }
}
