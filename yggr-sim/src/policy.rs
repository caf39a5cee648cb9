//! How a seed turns into a schedule of steps. [`Schedule`] holds what a run decides once from
//! its seed (fault rates, clock rates, workload intensities) and what it remembers between
//! steps (when the current partition heals). `happy` is a reliable cluster; `chaos` adds
//! drops, duplicates, long delays, reordering, timed partitions, leader isolation, crashes and
//! partial fsyncs, and drives the workload: membership churn, snapshots, reads and read bursts,
//! leadership transfers, and client requests sent to whichever node believes it leads.

use std::collections::{BTreeMap, BTreeSet};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{ConfigChange, Event, Membership, NodeId};

use crate::harness::{Cluster, SimError};
use crate::network::NetworkFaults;
use crate::options::{Clocks, Policy, RunOptions, Workload};

/// The share of chaos steps that advance time (one node tick on average) in a cluster of
/// three. Deliveries take about three times as many steps: a network must carry more than a
/// heartbeat per tick. Larger clusters advance time more rarely still (see
/// [`time_share`]), since each tick sends more messages and a real network's capacity grows
/// with the number of links.
const TICK_SHARE: f64 = 0.16;

/// The chance that a time roll of the chaos policy does advance time in a cluster of `nodes`
/// (otherwise it delivers a message).
fn time_share(nodes: u64) -> f64 {
    (3.0 / nodes.max(1) as f64).min(1.0)
}

/// About how many chaos steps one maximum election timeout lasts in a cluster of `nodes`
/// whose maximum election timeout is `election_timeout_max_ticks`.
pub fn steps_per_election_timeout(nodes: u64, election_timeout_max_ticks: u64) -> u64 {
    let ticks = election_timeout_max_ticks as f64 * nodes as f64;
    (ticks / (TICK_SHARE * time_share(nodes))).ceil() as u64
}

/// The share of steps that advance time once the cluster is healed.
const HEALED_TICK_SHARE: f64 = 0.05;

/// Rates a chaos run uses, drawn from its seed so that runs differ in character as well as in
/// schedule. Rates are chances per step.
#[derive(Clone, Debug, PartialEq)]
pub struct ChaosRates {
    /// Network faults.
    pub network: NetworkFaults,
    /// A running node crashes.
    pub crash: f64,
    /// A node that just granted a vote restarts at once (per vote, not per step).
    pub bounce_after_vote: f64,
    /// A node that just acknowledged a leader's round restarts at once, its answer still on
    /// the way (per step in which an acknowledgement went out: they go out all the time).
    pub bounce_after_acknowledging: f64,
    /// A partition into two random sides starts.
    pub partition: f64,
    /// The leader is cut off from everyone (when the workload isolates leaders).
    pub leader_isolation: f64,
    /// A node's process pauses for a while (the leader, most of the time).
    pub pause: f64,
    /// A membership change is proposed (when the workload changes membership).
    pub membership: f64,
    /// A leadership transfer is requested (when the workload transfers).
    pub transfer: f64,
    /// A burst of reads is sent (when the workload has read bursts).
    pub read_burst: f64,
    /// How many reads a burst holds.
    pub read_burst_size: u64,
    /// A node takes a snapshot.
    pub snapshot: f64,
}

impl ChaosRates {
    /// Rates derived from `seed` for `workload`, for a cluster in which one maximum election
    /// timeout lasts about `steps_per_election_timeout` steps. Fault and workload rates are
    /// drawn per election timeout, so that a bigger cluster (more steps per timeout) is not
    /// hit harder than a small one.
    pub fn from_seed(
        seed: u64,
        workload: &Workload,
        steps_per_election_timeout: u64,
    ) -> ChaosRates {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed);
        let per_step = 1.0 / steps_per_election_timeout.max(1) as f64;
        let mut per_timeout = |enabled: bool, range: std::ops::Range<f64>| {
            if enabled {
                rng.random_range(range) * per_step
            } else {
                0.0
            }
        };
        let crash = per_timeout(true, 0.0..0.4);
        let bounce_after_acknowledging = per_timeout(true, 0.0..1.0);
        let partition = per_timeout(true, 0.05..0.3);
        let leader_isolation = per_timeout(workload.isolate_leader, 0.05..0.25);
        let pause = per_timeout(true, 0.02..0.15);
        let membership = per_timeout(workload.membership_changes, 0.5..2.0);
        let transfer = per_timeout(workload.transfers, 0.1..0.6);
        let read_burst = per_timeout(workload.read_bursts, 0.05..0.2);
        let network = NetworkFaults {
            drop: rng.random_range(0.0..0.2),
            duplicate: rng.random_range(0.0..0.1),
            reorder: true,
            delay: if workload.long_delays {
                rng.random_range(0.002..0.02)
            } else {
                0.0
            },
            max_delay_steps: if workload.long_delays {
                steps_per_election_timeout * 8
            } else {
                0
            },
        };
        ChaosRates {
            network,
            crash,
            partition,
            leader_isolation,
            pause,
            membership,
            transfer,
            read_burst,
            read_burst_size: rng.random_range(300..1_200),
            snapshot: f64::from(workload.snapshot_per_mille) / 1000.0,
            bounce_after_vote: rng.random_range(0.0..0.3),
            bounce_after_acknowledging,
        }
    }
}

/// Every node's clock: which node ticks when.
///
/// Independent clocks give each tick to one node, chosen with a weight per node drawn from the
/// seed: some clocks run several times faster than others, so a leader with a slow clock keeps
/// believing it leads long after the others moved on. Drifting clocks share one simulated time
/// and each runs at its own rate within the drift bound. Either way a paused node (a process
/// stopped by the operating system, say) gets no ticks; with drifting clocks the ticks it
/// missed are delivered the moment it resumes, as a host that reads a real clock would.
#[derive(Clone, Debug)]
struct SimClock {
    model: Clocks,
    /// Each node's clock rate: a weight for independent clocks, a rate relative to real time
    /// for drifting ones.
    rates: Vec<(NodeId, f64)>,
    /// Drifting clocks: how far each node is into its next tick (ticks owed while paused
    /// accumulate here).
    phases: Vec<f64>,
    /// Node ticks given so far.
    node_ticks: u64,
}

impl SimClock {
    fn new(model: Clocks, ids: &[NodeId], rng: &mut ChaCha8Rng) -> SimClock {
        let rates = ids
            .iter()
            .map(|id| {
                let rate = match model {
                    Clocks::Independent => [0.5, 1.0, 1.0, 2.0][rng.random_range(0..4)],
                    Clocks::Drifting {
                        max_drift_per_mille,
                    } => {
                        let drift = f64::from(max_drift_per_mille) / 1000.0;
                        // Extremes are where lease bugs live: most clocks sit at an edge.
                        match rng.random_range(0..3) {
                            0 => 1.0 - drift,
                            1 => 1.0 + drift,
                            _ => rng.random_range((1.0 - drift)..=(1.0 + drift)),
                        }
                    }
                };
                (*id, rate)
            })
            .collect();
        let phases = ids.iter().map(|_| rng.random_range(0.0..1.0)).collect();
        SimClock {
            model,
            rates,
            phases,
            node_ticks: 0,
        }
    }

    /// Clocks after healing: drifting clocks keep their rates; independent ones all run at one
    /// rate, so that no follower times out against a healthy leader by luck of the draw.
    fn healed(&self) -> SimClock {
        let rates = match self.model {
            Clocks::Drifting { .. } => self.rates.clone(),
            Clocks::Independent => self.rates.iter().map(|(id, _)| (*id, 1.0)).collect(),
        };
        SimClock {
            model: Clocks::Drifting {
                max_drift_per_mille: 0,
            },
            rates,
            phases: self.phases.clone(),
            node_ticks: self.node_ticks,
        }
    }

    /// Advances simulated time by one node tick on average, skipping paused nodes.
    fn advance(
        &mut self,
        cluster: &mut Cluster,
        paused: &BTreeMap<NodeId, u64>,
    ) -> Result<(), SimError> {
        match self.model {
            Clocks::Independent => {
                let total: f64 = self.rates.iter().map(|(_, rate)| rate).sum();
                let mut draw = cluster.rng.random_range(0.0..total);
                let mut chosen = self.rates[0].0;
                for (node, rate) in &self.rates {
                    chosen = *node;
                    if draw < *rate {
                        break;
                    }
                    draw -= rate;
                }
                if paused.contains_key(&chosen) {
                    return Ok(());
                }
                self.node_ticks += 1;
                cluster.step_node(chosen, Event::Tick)
            }
            Clocks::Drifting { .. } => {
                let share = 1.0 / self.rates.len() as f64;
                for position in 0..self.rates.len() {
                    let (node, rate) = self.rates[position];
                    self.phases[position] += rate * share;
                    if !paused.contains_key(&node) {
                        self.deliver_owed_ticks(cluster, position)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Gives the node at `position` every whole tick its clock owes it.
    fn deliver_owed_ticks(
        &mut self,
        cluster: &mut Cluster,
        position: usize,
    ) -> Result<(), SimError> {
        if self.model == Clocks::Independent {
            return Ok(());
        }
        let node = self.rates[position].0;
        while self.phases[position] >= 1.0 {
            self.phases[position] -= 1.0;
            self.node_ticks += 1;
            cluster.step_node(node, Event::Tick)?;
        }
        Ok(())
    }

    /// A paused node's process is gone (it crashed): the ticks it missed went with it. A new
    /// process starts its clock afresh, so only the part of a tick already under way stays;
    /// delivering the old ones to it would run its clock at an unbounded rate, which no lease
    /// survives.
    fn forget_owed_ticks(&mut self, node: NodeId) {
        if let Some(position) = self.rates.iter().position(|(id, _)| *id == node) {
            self.phases[position] = self.phases[position].fract();
        }
    }

    /// A paused node resumes: with drifting clocks, it first catches up on missed ticks.
    fn resume(&mut self, cluster: &mut Cluster, node: NodeId) -> Result<(), SimError> {
        match self.rates.iter().position(|(id, _)| *id == node) {
            Some(position) => self.deliver_owed_ticks(cluster, position),
            None => Ok(()),
        }
    }
}

/// A run's schedule: its rates, its clocks, and the partition in force.
#[derive(Clone, Debug)]
pub struct Schedule {
    options: RunOptions,
    rates: ChaosRates,
    clock: SimClock,
    /// The step at which the current partition heals.
    heal_at_step: Option<u64>,
    /// A leader that proposed its own removal, and the step at which it is cut off: a few
    /// steps after the proposal, so the change often reaches followers while their
    /// acknowledgements are still on their way back.
    isolate_at_step: Option<(NodeId, u64)>,
    /// The snapshot transfers (receiver, first chunk's step) already considered for a pause
    /// of a third node.
    transfers_seen: BTreeSet<(NodeId, u64)>,
    /// Paused nodes and the step at which each resumes.
    paused: BTreeMap<NodeId, u64>,
    /// Steps taken by read bursts, which do not count against the run's length.
    burst_steps: u64,
    /// The share of time and client-request rolls that act: 1 for three nodes, less for more
    /// (the rest deliver messages).
    client_share: f64,
    /// Roughly how many steps one maximum election timeout lasts.
    steps_per_election_timeout: u64,
}

impl Schedule {
    /// The schedule of the run `options` describes, over `cluster` as built for it.
    pub fn new(options: &RunOptions, cluster: &mut Cluster) -> Schedule {
        let ids = cluster.ids();
        let nodes = ids.len() as u64;
        let steps_per_election_timeout =
            steps_per_election_timeout(nodes, options.workload.engine.election_timeout_max_ticks);
        let rates =
            ChaosRates::from_seed(options.seed, &options.workload, steps_per_election_timeout);
        if options.policy == Policy::Chaos {
            cluster.network.set_faults(rates.network);
        }
        cluster.long_transfer_steps = steps_per_election_timeout;
        let mut clock_rng = ChaCha8Rng::seed_from_u64(options.seed ^ 0xc10c_c10c_c10c_c10c);
        let clock = SimClock::new(options.workload.clocks, &ids, &mut clock_rng);
        Schedule {
            options: options.clone(),
            rates,
            clock,
            heal_at_step: None,
            isolate_at_step: None,
            transfers_seen: BTreeSet::new(),
            paused: BTreeMap::new(),
            burst_steps: 0,
            client_share: time_share(nodes),
            steps_per_election_timeout,
        }
    }

    /// The rates drawn for this run.
    pub fn rates(&self) -> &ChaosRates {
        &self.rates
    }

    /// Steps that count against the run's length: all but those of read bursts.
    pub fn counted_steps(&self, cluster: &Cluster) -> u64 {
        cluster.step_count - self.burst_steps
    }

    /// Node ticks given so far.
    pub fn node_ticks(&self) -> u64 {
        self.clock.node_ticks
    }

    /// Roughly how many steps one maximum election timeout lasts.
    pub fn steps_per_election_timeout(&self) -> u64 {
        self.steps_per_election_timeout
    }

    /// One move of the policy: a step, or a fault followed by nothing.
    ///
    /// # Errors
    /// [`SimError`] at the first violated invariant.
    pub fn step(&mut self, cluster: &mut Cluster) -> Result<(), SimError> {
        match self.options.policy {
            Policy::Happy => self.happy_step(cluster),
            Policy::Chaos => self.chaos_step(cluster),
        }
    }

    /// Advances simulated time by one node tick on average, by the run's clock model.
    ///
    /// # Errors
    /// As [`Schedule::step`].
    pub fn advance_time(&mut self, cluster: &mut Cluster) -> Result<(), SimError> {
        self.clock.advance(cluster, &self.paused)
    }

    /// Ends every fault: the partition, pauses (catching up on missed ticks), and unequal
    /// clocks (independent clocks all run at one rate from now on; drifting ones keep their
    /// bounded rates). The liveness phase starts here.
    ///
    /// # Errors
    /// As [`Schedule::step`].
    pub fn heal(&mut self, cluster: &mut Cluster) -> Result<(), SimError> {
        self.heal_at_step = None;
        cluster.heal();
        for node in std::mem::take(&mut self.paused).into_keys() {
            self.resume(cluster, node)?;
        }
        self.clock = self.clock.healed();
        Ok(())
    }

    fn resume(&mut self, cluster: &mut Cluster, node: NodeId) -> Result<(), SimError> {
        cluster.network.resume(node);
        cluster
            .trace
            .note(cluster.step_count, format!("resume node {node}"));
        self.clock.resume(cluster, node)
    }

    /// Pauses `node` for between `min` and `max` election timeouts.
    fn pause(&mut self, cluster: &mut Cluster, node: NodeId, min: u64, max: u64) {
        let timeouts = cluster.rng.random_range(min * 2..=max * 2);
        let until = cluster.step_count + timeouts * self.steps_per_election_timeout / 2;
        cluster.network.pause(node);
        cluster.coverage.pauses += 1;
        cluster
            .trace
            .note(cluster.step_count, format!("pause node {node}"));
        self.paused.insert(node, until);
    }

    /// One step of a healed cluster: a delivery, or now and then time, then every write
    /// flushed. A healthy network delivers many messages per tick: a round trip is far
    /// shorter than a heartbeat interval.
    ///
    /// # Errors
    /// As [`Schedule::step`].
    pub fn healed_step(&mut self, cluster: &mut Cluster) -> Result<(), SimError> {
        if cluster.rng.random_bool(HEALED_TICK_SHARE) || cluster.network.is_empty() {
            self.advance_time(cluster)?;
        } else {
            cluster.deliver_one()?;
        }
        cluster.flush_all()
    }

    fn happy_step(&mut self, cluster: &mut Cluster) -> Result<(), SimError> {
        let roll = cluster.rng.random_range(0..100);
        if roll < 30 || cluster.network.is_empty() {
            self.advance_time(cluster)?;
        } else if roll < 92 {
            cluster.deliver_one()?;
        } else if let Some(node) = request_target(cluster, &self.paused) {
            cluster.propose(node)?;
        }
        cluster.flush_all()
    }

    fn chaos_step(&mut self, cluster: &mut Cluster) -> Result<(), SimError> {
        if self
            .heal_at_step
            .is_some_and(|heal_at| cluster.step_count >= heal_at)
        {
            self.heal_at_step = None;
            cluster.heal();
        }
        if let Some((leader, at)) = self.isolate_at_step
            && cluster.step_count >= at
        {
            self.isolate_at_step = None;
            if self.heal_at_step.is_none() {
                cluster.coverage.leader_isolations += 1;
                cluster.isolate(leader);
                self.heal_after(cluster, 1, 3);
            }
        }
        let now = cluster.step_count;
        let resumed: Vec<NodeId> = self
            .paused
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(node, _)| *node)
            .collect();
        for node in resumed {
            self.paused.remove(&node);
            self.resume(cluster, node)?;
        }
        if let Some(result) = self.maybe_inject_fault(cluster) {
            return result;
        }
        if let Some(result) = self.maybe_drive_workload(cluster) {
            return result;
        }
        let roll = cluster.rng.random_range(0..100);
        let node = active_node(cluster, &self.paused);
        let target = request_target(cluster, &self.paused);
        match (roll, node, target) {
            (0..=15, _, _) if chance(cluster, self.client_share) => self.advance_time(cluster),
            (72..=87, Some(node), _) => cluster.flush(node),
            // Client load falls with cluster size: every write costs a message to and from
            // each follower, and the simulated network carries one message per step.
            (88..=93, _, Some(target)) if chance(cluster, self.client_share) => {
                cluster.propose(target).map(|_| ())
            }
            (94..=96, _, _) => match down_nodes(cluster).first() {
                Some(first) => cluster.restart(*first),
                None => Ok(()),
            },
            (97.., _, Some(target))
                if self.options.workload.reads && chance(cluster, self.client_share) =>
            {
                cluster.propose_read(target)
            }
            _ => cluster.deliver_one().map(|_| ()),
        }
    }

    /// Crashes, partitions and leader isolation. `None` when nothing was injected.
    fn maybe_inject_fault(&mut self, cluster: &mut Cluster) -> Option<Result<(), SimError>> {
        if let Some(result) = self.pause_a_third_node_during_a_transfer(cluster) {
            return Some(result);
        }
        let rates = &self.rates;
        if let Some(voter) = cluster.last_vote_granter.take()
            && !self.paused.contains_key(&voter)
            && chance(cluster, rates.bounce_after_vote)
        {
            return Some(cluster.bounce(voter));
        }
        // A follower restarted the moment it acknowledged a round: its answer reaches the
        // leader, whose lease may count it, while the new process must go on refusing votes
        // for as long as the old one promised to.
        if let Some(follower) = cluster.last_round_acknowledger.take()
            && !self.paused.contains_key(&follower)
            && chance(cluster, rates.bounce_after_acknowledging)
        {
            cluster.coverage.bounces_after_acknowledging += 1;
            return Some(cluster.bounce(follower));
        }
        if chance(cluster, rates.crash) {
            let node = random_node(cluster);
            if cluster.nodes[&node].is_up() {
                // A crash ends a pause: the process is gone, and the ticks it missed too.
                if self.paused.remove(&node).is_some() {
                    cluster.network.resume(node);
                    self.clock.forget_owed_ticks(node);
                }
                return Some(cluster.crash(node, true));
            }
        }
        if chance(cluster, rates.pause) {
            let node = match cluster.leader() {
                Some(leader) if cluster.rng.random_bool(0.7) => leader,
                _ => random_node(cluster),
            };
            if !self.paused.contains_key(&node) {
                self.pause(cluster, node, 1, 4);
                return Some(Ok(()));
            }
        }
        if self.heal_at_step.is_some() {
            return None;
        }
        if chance(cluster, rates.leader_isolation)
            && let Some(leader) = cluster.leader()
        {
            cluster.coverage.leader_isolations += 1;
            cluster.isolate(leader);
            self.heal_after(cluster, 2, 5);
            return Some(Ok(()));
        }
        if chance(cluster, rates.partition) {
            cluster.partition_randomly();
            self.heal_after(cluster, 1, 4);
            return Some(Ok(()));
        }
        None
    }

    /// When a snapshot transfer starts in a three-node cluster, now and then pause the node
    /// that is neither the leader nor the receiver, for long enough that the leader needs the
    /// receiver for its majority while the transfer runs: a busy, responsive receiver must
    /// count as alive.
    fn pause_a_third_node_during_a_transfer(
        &mut self,
        cluster: &mut Cluster,
    ) -> Option<Result<(), SimError>> {
        let (receiver, started) = cluster
            .snapshot_transfers()
            .iter()
            .map(|(node, step)| (*node, *step))
            .find(|transfer| !self.transfers_seen.contains(transfer))?;
        self.transfers_seen.insert((receiver, started));
        let leader = cluster.leader()?;
        // Only where one paused node leaves the receiver deciding the majority.
        if cluster.ids().len() != 3 || !cluster.rng.random_bool(0.3) {
            return None;
        }
        let others: Vec<NodeId> = cluster
            .ids()
            .into_iter()
            .filter(|node| {
                *node != leader
                    && *node != receiver
                    && !self.paused.contains_key(node)
                    && cluster.nodes[node].is_up()
            })
            .collect();
        let third = *others.get(cluster.rng.random_range(0..others.len().max(1)))?;
        self.pause(cluster, third, 2, 4);
        Some(Ok(()))
    }

    /// Heals the partition in force after between `min` and `max` election timeouts.
    fn heal_after(&mut self, cluster: &mut Cluster, min: u64, max: u64) {
        let timeouts = cluster.rng.random_range(min * 2..=max * 2);
        let steps = timeouts * self.steps_per_election_timeout / 2;
        self.heal_at_step = Some(cluster.step_count + steps);
    }

    /// Snapshots, membership changes, transfers and read bursts. `None` when none happened.
    fn maybe_drive_workload(&mut self, cluster: &mut Cluster) -> Option<Result<(), SimError>> {
        let rates = self.rates.clone();
        let node = request_target(cluster, &self.paused)?;
        if chance(cluster, rates.snapshot) {
            let node = active_node(cluster, &self.paused)?;
            return Some(cluster.take_snapshot(node));
        }
        if chance(cluster, rates.membership) {
            return Some(self.change_membership(cluster, node));
        }
        if chance(cluster, rates.transfer) {
            let target = transfer_target(cluster, node);
            cluster.coverage.transfers += 1;
            return Some(cluster.step_node(node, Event::TransferLeadership { target }));
        }
        if chance(cluster, rates.read_burst) {
            cluster.coverage.read_bursts += 1;
            // A burst arrives at once: its reads do not count against the run's length. Half
            // the bursts arrive as separate events, half as one batch (`ProposeReads`).
            let before = cluster.step_count;
            let result = if cluster.rng.random_bool(0.5) {
                cluster.propose_reads(node, rates.read_burst_size)
            } else {
                (0..rates.read_burst_size).try_for_each(|_| cluster.propose_read(node))
            };
            self.burst_steps += cluster.step_count - before;
            return Some(result);
        }
        None
    }

    /// Proposes at `node` (usually one that believes it leads) a membership change that keeps
    /// between 1 and 7 voters. Promotions are sometimes proposed while the learner is cut off,
    /// and a leader removing itself is sometimes cut off a few steps later.
    fn change_membership(&mut self, cluster: &mut Cluster, node: NodeId) -> Result<(), SimError> {
        let membership = cluster
            .engine(node)
            .map(|engine| engine.membership().clone())
            .unwrap_or_default();
        let change = plan_change(cluster, node, &membership);
        if let ConfigChange::PromoteLearner(learner) = change
            && self.heal_at_step.is_none()
            && cluster.rng.random_bool(0.5)
        {
            cluster.isolate(learner);
            self.heal_after(cluster, 1, 3);
        }
        if change == ConfigChange::RemovePeer(node)
            && self.heal_at_step.is_none()
            && self.isolate_at_step.is_none()
            && cluster.rng.random_bool(0.5)
        {
            let delay = cluster.rng.random_range(1..=12);
            self.isolate_at_step = Some((node, cluster.step_count + delay));
        }
        cluster.step_node(node, Event::ProposeConfigChange(change))
    }
}

/// The membership change to propose at `node`, whose configuration is `membership`: usually
/// one that applies and keeps 1 to 7 voters, now and then any change at all (it is refused).
fn plan_change(cluster: &mut Cluster, node: NodeId, membership: &Membership) -> ConfigChange {
    let all: BTreeSet<NodeId> = cluster.ids().into_iter().collect();
    let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
    let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
    let outsiders: Vec<NodeId> = all
        .iter()
        .copied()
        .filter(|id| !membership.contains(*id))
        .collect();
    // A leader of two voters removing itself is the shape where the remaining voter alone
    // makes a majority of the new configuration and the old leader must not count itself:
    // make it common.
    if voters.len() == 2 && membership.is_voter(node) && cluster.rng.random_bool(0.5) {
        return ConfigChange::RemovePeer(node);
    }
    let mut options: Vec<ConfigChange> = Vec::new();
    if voters.len() < 7 {
        for outsider in &outsiders {
            options.extend([
                ConfigChange::AddLearner(*outsider),
                ConfigChange::AddLearner(*outsider),
                ConfigChange::AddPeer(*outsider),
            ]);
        }
        for learner in &learners {
            options.extend([
                ConfigChange::PromoteLearner(*learner),
                ConfigChange::PromoteLearner(*learner),
            ]);
        }
    }
    // Down to a single voter: from two voters, a leader removing itself leaves the other one
    // alone (it must count only that voter), and one missed message strands a voter.
    if voters.len() > 1 {
        options.extend(voters.iter().map(|voter| ConfigChange::RemovePeer(*voter)));
        if membership.is_voter(node) {
            options.push(ConfigChange::RemovePeer(node));
        }
    }
    options.extend(
        learners
            .iter()
            .map(|learner| ConfigChange::RemovePeer(*learner)),
    );
    if options.is_empty() || cluster.rng.random_bool(0.05) {
        let target = random_node(cluster);
        return match cluster.rng.random_range(0..4) {
            0 => ConfigChange::AddPeer(target),
            1 => ConfigChange::AddLearner(target),
            2 => ConfigChange::PromoteLearner(target),
            _ => ConfigChange::RemovePeer(target),
        };
    }
    options[cluster.rng.random_range(0..options.len())]
}

/// A transfer target for the leader `node`: usually another voter, now and then anyone.
fn transfer_target(cluster: &mut Cluster, node: NodeId) -> NodeId {
    let voters: Vec<NodeId> = cluster
        .engine(node)
        .map(|engine| {
            engine
                .membership()
                .voters
                .iter()
                .copied()
                .filter(|voter| *voter != node)
                .collect()
        })
        .unwrap_or_default();
    if voters.is_empty() || cluster.rng.random_bool(0.1) {
        random_node(cluster)
    } else {
        voters[cluster.rng.random_range(0..voters.len())]
    }
}

fn chance(cluster: &mut Cluster, rate: f64) -> bool {
    rate > 0.0 && cluster.rng.random_bool(rate.min(1.0))
}

fn random_node(cluster: &mut Cluster) -> NodeId {
    let ids = cluster.ids();
    ids[cluster.rng.random_range(0..ids.len())]
}

fn down_nodes(cluster: &Cluster) -> Vec<NodeId> {
    cluster
        .nodes
        .values()
        .filter(|node| !node.is_up())
        .map(|node| node.id)
        .collect()
}

/// Client requests go, most of the time, to a node that believes it leads, whichever term it
/// leads in: a deposed leader that has not noticed yet gets its share. Otherwise to anyone.
/// Never to a paused process: it handles nothing until it resumes. `None` when every node
/// is paused.
fn request_target(cluster: &mut Cluster, paused: &BTreeMap<NodeId, u64>) -> Option<NodeId> {
    let leaders: Vec<NodeId> = cluster
        .believed_leaders()
        .into_iter()
        .filter(|leader| !paused.contains_key(leader))
        .collect();
    if !leaders.is_empty() && cluster.rng.random_bool(0.8) {
        Some(leaders[cluster.rng.random_range(0..leaders.len())])
    } else {
        active_node(cluster, paused)
    }
}

/// A node chosen at random among those not paused; `None` when every node is.
fn active_node(cluster: &mut Cluster, paused: &BTreeMap<NodeId, u64>) -> Option<NodeId> {
    let active: Vec<NodeId> = cluster
        .ids()
        .into_iter()
        .filter(|node| !paused.contains_key(node))
        .collect();
    if active.is_empty() {
        return None;
    }
    Some(active[cluster.rng.random_range(0..active.len())])
}

/// One step of a reliable cluster, ticking nodes at random: tick, deliver or propose, then
/// flush everything. For scripted scenarios; runs use [`Schedule`].
///
/// # Errors
/// [`SimError`] at the first violated invariant.
pub fn happy_step(cluster: &mut Cluster) -> Result<(), SimError> {
    let roll = cluster.rng.random_range(0..100);
    if roll < 30 || cluster.network.is_empty() {
        let node = random_node(cluster);
        cluster.step_node(node, Event::Tick)?;
    } else if roll < 92 {
        cluster.deliver_one()?;
    } else if let Some(leader) = cluster.leader() {
        cluster.propose(leader)?;
    }
    cluster.flush_all()
}
