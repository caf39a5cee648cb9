//! Policies: how a seed turns into a schedule of steps. `happy` is a reliable cluster; `chaos`
//! adds drops, reordering, duplication, partitions, crashes and partial fsyncs. A [`Workload`]
//! adds what the cluster is asked to do besides replicating commands: membership changes,
//! snapshots, reads, leadership transfers.

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{ConfigChange, EngineConfig, Event, NodeId};

use crate::harness::{Cluster, ClusterOptions, SimError};
use crate::network::NetworkFaults;

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
}

/// What the cluster is asked to do besides replicating commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// The preset's name, used in replay commands (`default` for anything custom).
    pub name: &'static str,
    /// Propose random membership changes (add, add as learner, promote, remove, including
    /// removing the leader).
    pub membership_changes: bool,
    /// Extra nodes that start as joiners, outside the founding configuration.
    pub joiners: u64,
    /// Chance per step, in thousandths, that a node snapshots its state machine.
    pub snapshot_per_mille: u16,
    /// Send linearizable reads to the leader and check what they observe.
    pub reads: bool,
    /// Ask the leader to transfer leadership to random nodes.
    pub transfers: bool,
    /// Tick every node together, as if their clocks ran at one rate. Leases are only safe
    /// under a clock-rate bound, so runs with leases use this.
    pub synchronized_ticks: bool,
    /// The engine configuration every node uses.
    pub engine: EngineConfig,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            name: "default",
            membership_changes: false,
            joiners: 0,
            snapshot_per_mille: 10,
            reads: true,
            transfers: false,
            synchronized_ticks: false,
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

    /// A named preset, as the suites use them:
    /// - `default`: commands, occasional snapshots and reads;
    /// - `membership`: random membership changes, two joiners outside the founding set;
    /// - `snapshot`: frequent snapshots and 4-byte InstallSnapshot chunks;
    /// - `reads`: reads and leadership transfers (ReadIndex);
    /// - `lease`: reads with a leader lease, all nodes ticking together;
    /// - `transfer`: transfers and membership changes with one joiner.
    pub fn preset(name: &str) -> Option<Workload> {
        let base = Workload::default();
        let workload = match name {
            "default" => base,
            "membership" => Workload {
                name: "membership",
                membership_changes: true,
                joiners: 2,
                ..base
            },
            "snapshot" => Workload {
                name: "snapshot",
                snapshot_per_mille: 60,
                engine: EngineConfig {
                    snapshot_chunk_size_bytes: 4,
                    ..EngineConfig::default()
                },
                ..base
            },
            "reads" => Workload {
                name: "reads",
                reads: true,
                transfers: true,
                ..base
            },
            "lease" => Workload {
                name: "lease",
                reads: true,
                transfers: true,
                synchronized_ticks: true,
                engine: EngineConfig {
                    lease_duration_ticks: 6,
                    ..EngineConfig::default()
                },
                ..base
            },
            "transfer" => Workload {
                name: "transfer",
                transfers: true,
                membership_changes: true,
                joiners: 1,
                ..base
            },
            _ => return None,
        };
        Some(workload)
    }
}

/// Everything that defines a run; the same options replay the same run exactly.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Founding voters.
    pub nodes: u64,
    /// Steps to take.
    pub steps: u64,
    /// The policy.
    pub policy: Policy,
    /// What else the cluster is asked to do.
    pub workload: Workload,
}

impl RunOptions {
    /// A run with the default workload.
    pub fn new(seed: u64, nodes: u64, steps: u64, policy: Policy) -> RunOptions {
        RunOptions {
            seed,
            nodes,
            steps,
            policy,
            workload: Workload::default(),
        }
    }
}

/// Fault rates a chaos run uses, drawn from its seed so that runs differ in character as well
/// as in schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ChaosRates {
    /// Network faults.
    pub network: NetworkFaults,
    /// Chance per step that a running node crashes.
    pub crash: f64,
    /// Chance per step that a partition starts.
    pub partition: f64,
}

impl ChaosRates {
    /// Rates derived from `seed`.
    pub fn from_seed(seed: u64) -> ChaosRates {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed);
        ChaosRates {
            network: NetworkFaults {
                drop: rng.random_range(0.0..0.2),
                duplicate: rng.random_range(0.0..0.1),
                reorder: true,
            },
            crash: rng.random_range(0.0..0.006),
            partition: rng.random_range(0.0..0.004),
        }
    }
}

/// What a completed run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Steps taken.
    pub steps: u64,
    /// Terms in which some node led.
    pub terms_with_leader: usize,
    /// The highest index committed anywhere.
    pub max_committed: u64,
}

/// Runs one seeded schedule, checking every invariant after every step.
///
/// # Errors
/// [`SimError`] at the first violated invariant, with the seed, step and replay command.
pub fn run(options: &RunOptions) -> Result<RunReport, SimError> {
    let mut cluster = build(options);
    drive(&mut cluster, options)?;
    Ok(report(&cluster))
}

/// The cluster a run starts from.
pub fn build(options: &RunOptions) -> Cluster {
    let faults = match options.policy {
        Policy::Happy => NetworkFaults::NONE,
        Policy::Chaos => ChaosRates::from_seed(options.seed).network,
    };
    let mut cluster = Cluster::new(ClusterOptions {
        nodes: options.nodes,
        seed: options.seed,
        faults,
        joiners: options.workload.joiners,
        engine: options.workload.engine.clone(),
    });
    let policy = match options.policy {
        Policy::Happy => "happy",
        Policy::Chaos => "chaos",
    };
    cluster.replay_env = format!(
        "YGGR_SIM_POLICY={policy} YGGR_SIM_WORKLOAD={}",
        options.workload.name
    );
    cluster
}

/// Runs the policy until the cluster has taken `options.steps` steps. A step is one event fed
/// to one node, one flush, or one restart; injected faults (a drop, a crash, a partition) happen
/// between steps.
///
/// # Errors
/// As [`run`].
pub fn drive(cluster: &mut Cluster, options: &RunOptions) -> Result<(), SimError> {
    let rates = ChaosRates::from_seed(options.seed);
    while cluster.step_count < options.steps {
        policy_step(cluster, options, &rates)?;
    }
    Ok(())
}

/// One move of the policy: a step, or a fault followed by nothing.
///
/// # Errors
/// As [`run`].
pub fn policy_step(
    cluster: &mut Cluster,
    options: &RunOptions,
    rates: &ChaosRates,
) -> Result<(), SimError> {
    match options.policy {
        Policy::Happy => happy_step(cluster, &options.workload),
        Policy::Chaos => chaos_step(cluster, &options.workload, rates),
    }
}

/// The summary of a finished run.
pub fn report(cluster: &Cluster) -> RunReport {
    RunReport {
        steps: cluster.step_count,
        terms_with_leader: cluster.checker.terms_with_leader(),
        max_committed: cluster.checker.max_committed().get(),
    }
}

fn random_node(cluster: &mut Cluster) -> NodeId {
    let ids = cluster.ids();
    ids[cluster.rng.random_range(0..ids.len())]
}

/// Requests go to the leader most of the time, and sometimes to whoever.
fn request_target(cluster: &mut Cluster) -> NodeId {
    match cluster.leader() {
        Some(leader) if cluster.rng.random_bool(0.8) => leader,
        _ => random_node(cluster),
    }
}

fn tick(cluster: &mut Cluster, workload: &Workload) -> Result<(), SimError> {
    if workload.synchronized_ticks {
        for node in cluster.ids() {
            cluster.step_node(node, Event::Tick)?;
        }
        Ok(())
    } else {
        let node = random_node(cluster);
        cluster.step_node(node, Event::Tick)
    }
}

/// One step of a reliable cluster: tick, deliver or propose, then flush everything.
///
/// # Errors
/// As [`run`].
pub fn happy_step(cluster: &mut Cluster, workload: &Workload) -> Result<(), SimError> {
    let roll = cluster.rng.random_range(0..100);
    if roll < 30 || cluster.network.is_empty() {
        tick(cluster, workload)?;
    } else if roll < 92 {
        cluster.deliver_one()?;
    } else {
        let node = request_target(cluster);
        cluster.propose(node)?;
    }
    cluster.flush_all()
}

/// One step under chaos.
///
/// # Errors
/// As [`run`].
pub fn chaos_step(
    cluster: &mut Cluster,
    workload: &Workload,
    rates: &ChaosRates,
) -> Result<(), SimError> {
    if rates.crash > 0.0 && cluster.rng.random_bool(rates.crash) {
        let node = random_node(cluster);
        if cluster.nodes[&node].is_up() {
            cluster.crash(node, true)?;
            return Ok(());
        }
    }
    if rates.partition > 0.0 && cluster.rng.random_bool(rates.partition) {
        cluster.partition_randomly();
        return Ok(());
    }
    if workload.snapshot_per_mille > 0
        && cluster.rng.random_range(0..1000u16) < workload.snapshot_per_mille
    {
        let node = random_node(cluster);
        return cluster.take_snapshot(node);
    }
    if workload.membership_changes && cluster.rng.random_bool(0.01) {
        let change = random_change(cluster);
        let node = request_target(cluster);
        return cluster.step_node(node, Event::ProposeConfigChange(change));
    }
    if workload.transfers && cluster.rng.random_bool(0.004) {
        let target = random_node(cluster);
        let node = request_target(cluster);
        return cluster.step_node(node, Event::TransferLeadership { target });
    }
    let roll = cluster.rng.random_range(0..100);
    let node = random_node(cluster);
    match roll {
        0..=27 => tick(cluster, workload),
        28..=69 => cluster.deliver_one().map(|_| ()),
        70..=85 => cluster.flush(node),
        86..=91 => {
            let target = request_target(cluster);
            cluster.propose(target).map(|_| ())
        }
        92..=95 => {
            let down: Vec<NodeId> = cluster
                .ids()
                .into_iter()
                .filter(|id| !cluster.nodes[id].is_up())
                .collect();
            match down.first() {
                Some(first) => cluster.restart(*first),
                None => Ok(()),
            }
        }
        96..=97 => {
            if cluster.network.is_partitioned() {
                cluster.heal();
            }
            Ok(())
        }
        _ if workload.reads => {
            let target = request_target(cluster);
            cluster.propose_read(target)
        }
        _ => tick(cluster, workload),
    }
}

fn random_change(cluster: &mut Cluster) -> ConfigChange {
    let node = random_node(cluster);
    match cluster.rng.random_range(0..4) {
        0 => ConfigChange::AddPeer(node),
        1 => ConfigChange::AddLearner(node),
        2 => ConfigChange::PromoteLearner(node),
        _ => ConfigChange::RemovePeer(node),
    }
}
