//! The simulated cluster: N engines, each with a simulated disk, a tracked state machine and a
//! host loop that obeys the engine's ordering contract. It doubles as a reference host.

use std::collections::{BTreeMap, BTreeSet};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{
    Action, AppendOutcome, ConfigChange, Engine, EngineConfig, EntryPayload, Event, LogIndex,
    Membership, Message, NodeId, RandomEnv, Role, Rpc, Term, VoteResponse,
};

use crate::checker::{ConfigurationId, Invariant, SafetyChecker, Violation};
use crate::coverage::Coverage;
use crate::disk::{DurableState, PendingWrite, StoredSnapshot};
use crate::history::{ClientHistory, PendingRead};
use crate::network::{Delivery, Envelope, Network, NetworkFaults};
use crate::options::RunOptions;
use crate::state_machine::{SNAPSHOT_HEADER_BYTES, TrackedStateMachine};
use crate::trace::Trace;

/// The command type the simulator replicates: a unique id per proposal, so that any mix-up
/// between two commands is visible.
pub type Command = u64;

/// One simulated server.
#[derive(Debug)]
pub struct SimNode {
    /// The server's id.
    pub id: NodeId,
    /// The running engine; `None` while crashed.
    pub engine: Option<Engine<Command>>,
    /// What is durable.
    pub disk: DurableState,
    /// Writes requested but not yet fsynced, oldest first.
    pub pending: Vec<PendingWrite>,
    /// Actions waiting for writes to become durable (sends, applies, ...), in order, each with
    /// the count of writes that must be durable first: every write requested before it.
    pub held: Vec<(u64, Action<Command>)>,
    /// Writes requested since start, and how many of them are durable.
    writes_requested: u64,
    writes_durable: u64,
    /// The application state, lost on a crash and rebuilt from the snapshot on restart.
    pub state_machine: TrackedStateMachine,
    /// How many times this node has been started.
    pub incarnation: u64,
    /// The highest index of this node's commit index already reported to the checker.
    observed_commit: LogIndex,
    /// The term this node is leading in, as last observed; `None` when it does not lead.
    observed_leader_term: Option<Term>,
    /// The configuration in force at `observed_commit` on this node, when known (not while
    /// a joiner has none, nor across entries a snapshot covers).
    observed_configuration: Option<ConfigurationId>,
}

/// `membership`'s number, reusing `cached` when it still names it; `None` for the empty
/// configuration of a joiner that has not learned one (it knows nothing to compare).
fn known_configuration(
    checker: &mut SafetyChecker,
    cached: Option<ConfigurationId>,
    membership: &Membership,
) -> Option<ConfigurationId> {
    if membership.voters.is_empty() && membership.learners.is_empty() {
        return None;
    }
    if let Some(id) = cached
        && checker.configuration(id) == membership
    {
        return Some(id);
    }
    Some(checker.configuration_id(membership))
}

impl SimNode {
    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.engine.is_some()
    }
}

/// Campaigns one node started (see [`Cluster::campaigns`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Campaigns {
    /// Real elections: terms this node started to campaign in.
    pub elections: u64,
    /// Pre-vote rounds (thesis §9.6), which start no term.
    pub pre_votes: u64,
    /// Campaigns of either kind started while another node led the term this one was in,
    /// other than at that leader's request (TimeoutNow): against a live leader.
    pub against_a_live_leader: u64,
}

/// How to build a cluster.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// How many founding voters (ids 1..=nodes).
    pub nodes: u64,
    /// The seed every random choice derives from.
    pub seed: u64,
    /// Network fault rates.
    pub faults: NetworkFaults,
    /// Extra nodes, with the next ids, started as joiners: an empty configuration, waiting
    /// for a leader to add them.
    pub joiners: u64,
    /// The engine configuration every node uses.
    pub engine: EngineConfig,
    /// The size of state-machine snapshots, in bytes.
    pub snapshot_bytes: usize,
}

impl ClusterOptions {
    /// `nodes` voters, a perfect network and default engine settings.
    pub fn new(nodes: u64, seed: u64) -> ClusterOptions {
        ClusterOptions {
            nodes,
            seed,
            faults: NetworkFaults::NONE,
            joiners: 0,
            engine: EngineConfig::default(),
            snapshot_bytes: SNAPSHOT_HEADER_BYTES,
        }
    }
}

/// A failed run: the invariant, where it broke, the full options of the run, and how to
/// replay it.
#[derive(Clone, Debug)]
pub struct SimError {
    /// The seed of the run.
    pub seed: u64,
    /// The step at which the violation was observed (1-based).
    pub step: u64,
    /// The broken invariant.
    pub violation: Violation,
    /// Everything that defines the run, when it came from [`run`](crate::run()): pass it to
    /// [`replay`](crate::replay()) (`failure.options.as_deref()`) to watch it again. `None`
    /// for a hand-scripted cluster.
    pub options: Option<Box<RunOptions>>,
    /// A shell command that replays the run with a step-by-step trace.
    pub replay: String,
}

impl std::fmt::Display for SimError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} (seed {}, step {})\nreplay: {}",
            self.violation, self.seed, self.step, self.replay
        )?;
        if self.options.is_some() {
            write!(
                formatter,
                "\n(or, from any crate: yggr_sim::replay(error.options.as_deref().unwrap(), &mut |line| println!(\"{{line}}\")))"
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for SimError {}

/// N simulated servers, the network between them, and the checkers watching them.
#[derive(Debug)]
pub struct Cluster {
    /// The servers by id.
    pub nodes: BTreeMap<NodeId, SimNode>,
    /// Messages in flight.
    pub network: Network,
    /// The invariant checker.
    pub checker: SafetyChecker,
    /// Every client request and what its client was told.
    pub history: ClientHistory,
    /// What the run has exercised so far.
    pub coverage: Coverage,
    /// The run's random source: every choice the simulator makes comes from here.
    pub rng: ChaCha8Rng,
    /// Steps taken so far.
    pub step_count: u64,
    /// A readable record of the run, when enabled.
    pub trace: Trace,
    /// The options of the run this cluster belongs to, for failure reports.
    pub run_options: Option<RunOptions>,
    /// Steps after which a snapshot transfer counts as long (about an election timeout; set
    /// by the schedule).
    pub long_transfer_steps: u64,
    /// When each node received the first chunk of the snapshot it is receiving.
    snapshot_started_at: BTreeMap<NodeId, u64>,
    /// The node that most recently sent a vote grant, until the policy looks (it may restart
    /// that node at once, the moment a lost `votedFor` would matter most).
    pub last_vote_granter: Option<NodeId>,
    /// Campaigns each node started, counted from what its engine did: real elections (a
    /// step that moved it to a newer term with its own vote) and pre-vote rounds (a step that
    /// sent pre-vote requests). The liveness phase holds a healed cluster to a baseline.
    pub campaigns: BTreeMap<NodeId, Campaigns>,
    /// The node that most recently sent an acknowledgement of a leader's round (an
    /// AppendEntries or InstallSnapshot answer in the leader's term), until the policy looks
    /// (it may restart that node at once, while its answer is still on the way and a lease
    /// may count it).
    pub last_round_acknowledger: Option<NodeId>,
    seed: u64,
    founding: Membership,
    joiners: BTreeSet<NodeId>,
    config: EngineConfig,
    snapshot_bytes: usize,
    next_command: Command,
    next_read: u64,
    /// How many nodes believed they lead after the previous step.
    leaders_after_last_step: usize,
    /// The highest index any node has applied, to count each committed entry once.
    highest_applied: LogIndex,
}

impl Cluster {
    /// Builds the cluster and starts every node.
    ///
    /// # Panics
    /// If `options.engine` is not a valid engine configuration.
    pub fn new(options: ClusterOptions) -> Cluster {
        let ids: Vec<NodeId> = (1..=options.nodes + options.joiners)
            .filter_map(NodeId::new)
            .collect();
        let founding = Membership::from_voters(ids.iter().copied().take(options.nodes as usize));
        let joiners: BTreeSet<NodeId> = ids.iter().copied().skip(options.nodes as usize).collect();
        let mut cluster = Cluster {
            nodes: BTreeMap::new(),
            network: Network::new(options.faults),
            checker: SafetyChecker::new(),
            history: ClientHistory::default(),
            coverage: Coverage::default(),
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            step_count: 0,
            trace: Trace::disabled(),
            run_options: None,
            long_transfer_steps: u64::MAX,
            snapshot_started_at: BTreeMap::new(),
            last_vote_granter: None,
            last_round_acknowledger: None,
            campaigns: BTreeMap::new(),
            seed: options.seed,
            founding,
            joiners,
            config: options.engine,
            snapshot_bytes: options.snapshot_bytes,
            next_command: 1,
            next_read: 1,
            leaders_after_last_step: 0,
            highest_applied: LogIndex::ZERO,
        };
        for id in ids {
            cluster.nodes.insert(
                id,
                SimNode {
                    id,
                    engine: None,
                    disk: DurableState::default(),
                    pending: Vec::new(),
                    held: Vec::new(),
                    writes_requested: 0,
                    writes_durable: 0,
                    state_machine: TrackedStateMachine::default(),
                    incarnation: 0,
                    observed_commit: LogIndex::ZERO,
                    observed_leader_term: None,
                    observed_configuration: None,
                },
            );
            cluster
                .start(id)
                .unwrap_or_else(|violation| panic!("a fresh node failed to start: {violation}"));
        }
        cluster
    }

    /// The run's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Node ids in ascending order.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The engine configuration every node runs with.
    pub fn engine_config(&self) -> &EngineConfig {
        &self.config
    }

    /// The engine of `node`, if it is up.
    pub fn engine(&self, node: NodeId) -> Option<&Engine<Command>> {
        self.nodes.get(&node).and_then(|n| n.engine.as_ref())
    }

    /// The leader of the highest term among running nodes.
    pub fn leader(&self) -> Option<NodeId> {
        self.engines()
            .filter(|e| e.role() == Role::Leader)
            .max_by_key(|e| e.current_term())
            .map(|e| e.id())
    }

    /// Every running node that believes it leads, whatever its term.
    pub fn believed_leaders(&self) -> Vec<NodeId> {
        self.engines()
            .filter(|e| e.role() == Role::Leader)
            .map(|e| e.id())
            .collect()
    }

    fn engines(&self) -> impl Iterator<Item = &Engine<Command>> {
        self.nodes.values().filter_map(|n| n.engine.as_ref())
    }

    /// Starts (or restarts) `node` from its durable state alone.
    fn start(&mut self, node: NodeId) -> Result<(), Violation> {
        let seed = self.seed;
        // A joiner restarts as it started, from an empty configuration; its log and snapshot
        // tell it the rest.
        let founding = if self.joiners.contains(&node) {
            Membership::empty()
        } else {
            self.founding.clone()
        };
        let config = self.config.clone();
        let Some(sim) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        sim.incarnation += 1;
        let env_seed = seed ^ node.get().rotate_left(32) ^ sim.incarnation.rotate_left(48);
        let mut engine = Engine::with_config(node, founding, RandomEnv::seeded(env_seed), config)
            .map_err(|error| Violation {
            invariant: Invariant::HostContract,
            detail: format!("engine config rejected: {error}"),
        })?;
        engine
            .recover_from(sim.disk.recovered())
            .map_err(|error| Violation {
                invariant: Invariant::HostContract,
                detail: format!("node {node} could not recover its own durable state: {error}"),
            })?;
        sim.state_machine = sim
            .disk
            .snapshot
            .as_ref()
            .and_then(|s| TrackedStateMachine::from_bytes(&s.bytes))
            .unwrap_or_default();
        sim.observed_leader_term = None;
        sim.observed_commit = engine.commit_index();
        sim.observed_configuration =
            known_configuration(&mut self.checker, None, engine.committed_membership());
        sim.engine = Some(engine);
        Ok(())
    }

    /// Wraps `violation` with where it happened and how to see it again.
    pub fn violation(&self, violation: Violation) -> SimError {
        let replay = match &self.run_options {
            Some(options) => {
                format!("YGGR_SIM_RUN='{options}' cargo run --release -p yggr-sim --example replay")
            }
            None => format!(
                "a scripted cluster (seed {}); rerun its test with the trace enabled",
                self.seed
            ),
        };
        SimError {
            seed: self.seed,
            step: self.step_count,
            violation,
            options: self.run_options.clone().map(Box::new),
            replay,
        }
    }

    // ---- Steps: each is one unit of simulated progress, followed by the invariant checks ----

    /// Feeds `event` to `node` (if up) and carries out what it asks.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn step_node(&mut self, node: NodeId, event: Event<Command>) -> Result<(), SimError> {
        self.step_count += 1;
        self.trace.event(self.step_count, node, &event);
        let result = self
            .feed(node, event)
            .and_then(|()| self.check_after_step());
        result.map_err(|violation| self.violation(violation))
    }

    /// Delivers one message from the network (its choice of which, and its fate).
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn deliver_one(&mut self) -> Result<bool, SimError> {
        let now = self.step_count;
        let Some(delivery) = self.network.next_delivery(&mut self.rng, now) else {
            return Ok(false);
        };
        match delivery {
            Delivery::Deliver(Envelope { to, message }) => {
                self.step_node(to, Event::Incoming(message))?;
            }
            Delivery::Dropped(envelope) => self.trace.fault(self.step_count, "dropped", &envelope),
            Delivery::Delayed(envelope) => {
                self.coverage.messages_delayed += 1;
                self.trace.fault(self.step_count, "delayed", &envelope);
            }
            Delivery::Partitioned(envelope) => {
                self.trace.fault(self.step_count, "partitioned", &envelope);
            }
        }
        Ok(true)
    }

    /// Proposes a fresh command at `node`, following it in the client history.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn propose(&mut self, node: NodeId) -> Result<Command, SimError> {
        let command = self.next_command;
        self.next_command += 1;
        self.note_request(node);
        self.step_node(node, Event::ClientProposal(command))?;
        let appended = self.engine(node).and_then(|engine| {
            let last = engine.last_log_index();
            engine
                .entry(last)
                .filter(|entry| entry.payload == EntryPayload::Command(command))
                .map(|entry| (entry.index, entry.term))
        });
        self.history.proposed(node, command, &[], appended);
        Ok(command)
    }

    /// Proposes a linearizable read at `node`, remembering what it must observe.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn propose_read(&mut self, node: NodeId) -> Result<(), SimError> {
        let id = self.next_read;
        self.next_read += 1;
        self.note_request(node);
        if self.nodes.get(&node).is_some_and(SimNode::is_up) {
            let read = PendingRead {
                required: self.checker.max_committed(),
                sent_at_step: self.step_count + 1,
            };
            self.history.read_sent(node, id, read);
        }
        self.step_node(node, Event::ProposeRead { id })
    }

    /// Proposes `count` linearizable reads at `node` in one event (`Event::ProposeReads`),
    /// remembering what each must observe.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn propose_reads(&mut self, node: NodeId, count: u64) -> Result<(), SimError> {
        let ids: Vec<u64> = (0..count).map(|offset| self.next_read + offset).collect();
        self.next_read += count;
        self.note_request(node);
        if self.nodes.get(&node).is_some_and(SimNode::is_up) {
            let read = PendingRead {
                required: self.checker.max_committed(),
                sent_at_step: self.step_count + 1,
            };
            for id in &ids {
                self.history.read_sent(node, *id, read);
            }
        }
        self.step_node(node, Event::ProposeReads { ids })
    }

    /// Counts a client request that reached a leader some newer leader has replaced.
    fn note_request(&mut self, node: NodeId) {
        let Some(engine) = self.engine(node) else {
            return;
        };
        if engine.role() == Role::Leader
            && self
                .checker
                .newest_leader_term()
                .is_some_and(|newest| newest > engine.current_term())
        {
            self.coverage.requests_at_stale_leaders += 1;
        }
    }

    /// Makes every pending write of `node` durable, then carries out what waited for it.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn flush(&mut self, node: NodeId) -> Result<(), SimError> {
        self.step_count += 1;
        let result = self.flush_node(node).and_then(|()| self.check_after_step());
        result.map_err(|violation| self.violation(violation))
    }

    /// Flushes every node.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn flush_all(&mut self) -> Result<(), SimError> {
        for node in self.ids() {
            if self.nodes[&node].pending.is_empty() && self.nodes[&node].held.is_empty() {
                continue;
            }
            self.flush(node)?;
        }
        Ok(())
    }

    /// Nodes receiving a snapshot now, each with the step its first chunk arrived at.
    pub fn snapshot_transfers(&self) -> &BTreeMap<NodeId, u64> {
        &self.snapshot_started_at
    }

    /// Crashes `node`. With `partial_flush`, a random prefix of its pending writes reaches the
    /// disk first (an fsync that was under way); everything else in memory is lost.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn crash(&mut self, node: NodeId, partial_flush: bool) -> Result<(), SimError> {
        self.crash_process(node, partial_flush)?;
        self.network.forget_node(node);
        Ok(())
    }

    /// Crashes `node` and restarts it at once from its durable state. Messages already in
    /// flight to it stay in flight and reach the new process: Raft must tolerate any delay,
    /// and this is the schedule in which durable state forgotten on restart (a vote, say)
    /// does damage.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn bounce(&mut self, node: NodeId) -> Result<(), SimError> {
        if !self.nodes.get(&node).is_some_and(SimNode::is_up) {
            return Ok(());
        }
        self.coverage.bounces += 1;
        self.crash_process(node, true)?;
        self.restart(node)
    }

    /// The process of `node` dies; see [`Cluster::crash`].
    fn crash_process(&mut self, node: NodeId, partial_flush: bool) -> Result<(), SimError> {
        let keep = {
            let pending = self.nodes.get(&node).map_or(0, |n| n.pending.len());
            if partial_flush && pending > 0 {
                self.rng.random_range(0..=pending)
            } else {
                0
            }
        };
        self.trace.note(
            self.step_count,
            format!("crash node {node}, {keep} pending writes survive"),
        );
        if let Some(sim) = self.nodes.get_mut(&node) {
            if sim.engine.is_some() {
                self.coverage.crashes += 1;
            }
            let surviving: Vec<PendingWrite> = sim.pending.drain(..).take(keep).collect();
            for write in surviving {
                if let Err(violation) = Self::make_durable(&mut self.checker, sim, write) {
                    return Err(self.violation(violation));
                }
            }
            sim.held.clear();
            sim.writes_requested = 0;
            sim.writes_durable = 0;
            sim.engine = None;
            sim.state_machine = TrackedStateMachine::default();
        }
        self.history.abandon(node);
        self.history.abandon_reads(node);
        Ok(())
    }

    /// Restarts a crashed `node` from its durable state.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        self.step_count += 1;
        self.trace
            .note(self.step_count, format!("restart node {node}"));
        let result = self.start(node).and_then(|()| self.check_after_step());
        result.map_err(|violation| self.violation(violation))
    }

    /// Tells `node` the host took a snapshot of its state machine as it stands.
    ///
    /// # Errors
    /// A [`SimError`] when carrying this out breaks a safety invariant or the host contract:
    /// the violation, with the seed and the step.
    pub fn take_snapshot(&mut self, node: NodeId) -> Result<(), SimError> {
        let Some(sim) = self.nodes.get(&node) else {
            return Ok(());
        };
        let Some(engine) = sim.engine.as_ref() else {
            return Ok(());
        };
        let state = sim.state_machine;
        if state.last_applied <= engine.snapshot_index() || !sim.held.is_empty() {
            return Ok(());
        }
        self.coverage.snapshots_taken += 1;
        let bytes = state.to_bytes(self.snapshot_bytes);
        self.step_node(
            node,
            Event::SnapshotTaken {
                last_included_index: state.last_applied,
                bytes,
            },
        )
    }

    /// Splits the cluster at random into two sides, neither of them empty.
    pub fn partition_randomly(&mut self) {
        let ids = self.ids();
        let mut left = BTreeSet::new();
        let mut right = BTreeSet::new();
        for id in &ids {
            if self.rng.random_bool(0.5) {
                left.insert(*id);
            } else {
                right.insert(*id);
            }
        }
        if left.is_empty() || right.is_empty() {
            let moved = ids[self.rng.random_range(0..ids.len())];
            let (from, to) = if left.is_empty() {
                (&mut right, &mut left)
            } else {
                (&mut left, &mut right)
            };
            from.remove(&moved);
            to.insert(moved);
        }
        self.partition(vec![left, right]);
    }

    /// Cuts `node` off from every other node.
    pub fn isolate(&mut self, node: NodeId) {
        let rest: BTreeSet<NodeId> = self.ids().into_iter().filter(|id| *id != node).collect();
        self.partition(vec![BTreeSet::from([node]), rest]);
    }

    /// Splits the nodes into `sides`.
    pub fn partition(&mut self, sides: Vec<BTreeSet<NodeId>>) {
        self.coverage.partitions += 1;
        self.trace
            .note(self.step_count, format!("partition {sides:?}"));
        self.network.partition(sides);
    }

    /// Removes any partition.
    pub fn heal(&mut self) {
        self.trace.note(self.step_count, "heal".to_string());
        self.network.heal();
    }

    // ---- The host loop ----

    fn feed(&mut self, node: NodeId, event: Event<Command>) -> Result<(), Violation> {
        let Some(engine) = self.nodes.get_mut(&node).and_then(|n| n.engine.as_mut()) else {
            return Ok(());
        };
        let reads: Vec<u64> = match &event {
            Event::ProposeRead { id } => vec![*id],
            Event::ProposeReads { ids } => ids.clone(),
            _ => Vec::new(),
        };
        if let Event::Incoming(Message {
            rpc: Rpc::InstallSnapshot(chunk),
            ..
        }) = &event
            && chunk.offset == 0
        {
            self.snapshot_started_at.insert(node, self.step_count);
        }
        let term_before = engine.current_term();
        let told_to_campaign = matches!(
            &event,
            Event::Incoming(Message {
                rpc: Rpc::TimeoutNow,
                ..
            })
        );
        let leases = engine.config().lease_duration_ticks > 0;
        if leases && engine.role() == Role::Leader {
            Self::observe_before_lease_step(&mut self.checker, engine, node, &event, &reads);
        }
        let actions = engine.step(event);
        let lease_reads = if leases && engine.role() == Role::Leader {
            Self::observe_after_lease_step(&mut self.checker, engine, node, &actions)
        } else {
            None
        };
        let elections =
            u64::from(engine.current_term() > term_before && engine.voted_for() == Some(node));
        let pre_votes = u64::from(actions.iter().any(|action| {
            matches!(
                action,
                Action::Send {
                    message: Message {
                        rpc: Rpc::RequestPreVote(_),
                        ..
                    },
                    ..
                }
            )
        }));
        let campaigned = elections + pre_votes > 0;
        if campaigned {
            let campaigns = self.campaigns.entry(node).or_default();
            campaigns.elections += elections;
            campaigns.pre_votes += pre_votes;
        }
        let served_at_once = actions
            .iter()
            .filter(|action| matches!(action, Action::ReadReady { id } if reads.contains(id)))
            .count() as u64;
        if served_at_once > 0 {
            self.coverage.reads_served_at_once += served_at_once;
            // Served without a round trip by a leader with others to ask: by its lease.
            let by_lease = engine.config().lease_duration_ticks > 0
                && engine
                    .membership()
                    .voters
                    .iter()
                    .any(|voter| *voter != node);
            if by_lease {
                self.checker.check_lease_read(node, engine.current_term())?;
            }
        }
        if campaigned && !told_to_campaign && self.leads(term_before, node) {
            self.campaigns
                .entry(node)
                .or_default()
                .against_a_live_leader += 1;
        }
        if let Some((term, voters, served)) = lease_reads {
            self.check_lease_reads(node, term, &voters, &served)?;
        }
        self.trace.actions(self.step_count, node, &actions);
        for action in actions {
            self.host_action(node, action)?;
        }
        Ok(())
    }

    /// Whether a running node other than `except` leads `term`.
    fn leads(&self, term: Term, except: NodeId) -> bool {
        self.nodes.values().any(|sim| {
            sim.id != except
                && sim.engine.as_ref().is_some_and(|engine| {
                    engine.role() == Role::Leader && engine.current_term() == term
                })
        })
    }

    /// Lease refusals, before `leader` steps: the acknowledgement it is about to receive, or
    /// the reads it is about to be asked (when it is ready to serve them).
    fn observe_before_lease_step(
        checker: &mut SafetyChecker,
        engine: &Engine<Command>,
        leader: NodeId,
        event: &Event<Command>,
        reads: &[u64],
    ) {
        let term = engine.current_term();
        if let Event::Incoming(message) = event
            && message.term == term
        {
            let round = match &message.rpc {
                Rpc::AppendEntriesResponse(response)
                    if response.outcome != AppendOutcome::StaleTerm =>
                {
                    Some(response.round)
                }
                Rpc::InstallSnapshotResponse(response) => Some(response.round),
                _ => None,
            };
            if let Some(round) = round {
                checker.observe_round_acknowledged(leader, term, message.from, round);
            }
        }
        if engine.term_at(engine.commit_index()) == Some(term) {
            for read in reads {
                checker.observe_read_proposed(leader, term, *read);
            }
        }
    }

    /// Lease refusals, after `leader` stepped (and still leads): the rounds it sent, and what
    /// the reads it served must be checked against (its term, its voters, the reads).
    fn observe_after_lease_step(
        checker: &mut SafetyChecker,
        engine: &Engine<Command>,
        leader: NodeId,
        actions: &[Action<Command>],
    ) -> Option<(Term, BTreeSet<NodeId>, Vec<u64>)> {
        let term = engine.current_term();
        let mut served = Vec::new();
        for action in actions {
            match action {
                Action::Send { message, .. } if message.term == term => match &message.rpc {
                    Rpc::AppendEntries(request) => {
                        checker.observe_round_sent(leader, term, request.round);
                    }
                    Rpc::InstallSnapshot(request) => {
                        checker.observe_round_sent(leader, term, request.round);
                    }
                    _ => {}
                },
                Action::ReadReady { id } => served.push(*id),
                _ => {}
            }
        }
        if served.is_empty() {
            return None;
        }
        Some((term, engine.membership().voters.clone(), served))
    }

    /// Lease refusals: `leader`, of `term` with `voters`, served `served`; every voter whose
    /// acknowledgement a lease read counts must still refuse votes.
    fn check_lease_reads(
        &mut self,
        leader: NodeId,
        term: Term,
        voters: &BTreeSet<NodeId>,
        served: &[u64],
    ) -> Result<(), Violation> {
        let nodes = &self.nodes;
        // A voter keeps the promise a lease counts on while it refuses every candidate's vote,
        // its own included: one that campaigns has voted for itself, and one that leads a
        // newer term was elected.
        let refuses_votes = |voter: NodeId| {
            nodes
                .get(&voter)
                .and_then(|sim| sim.engine.as_ref())
                .map(|engine| {
                    let campaigning = engine.role() == Role::Candidate
                        || (engine.role() == Role::Leader && engine.current_term() > term);
                    engine.refuses_votes() && !campaigning
                })
        };
        for read in served {
            if self
                .checker
                .check_lease_read_refusals(leader, term, *read, voters, refuses_votes)?
            {
                self.coverage.lease_reads_checked += 1;
            }
        }
        Ok(())
    }

    /// Carries out one action in order: persists queue up for fsync; anything else waits
    /// behind them if any are pending (the ordering contract), or runs at once.
    fn host_action(&mut self, node: NodeId, action: Action<Command>) -> Result<(), Violation> {
        let Some(sim) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        let Some(engine) = sim.engine.as_ref() else {
            return Ok(());
        };
        match action {
            Action::PersistHardState {
                current_term,
                voted_for,
            } => {
                sim.pending.push(PendingWrite::HardState {
                    current_term,
                    voted_for,
                });
                sim.writes_requested += 1;
            }
            Action::PersistLogEntries(entries) => {
                sim.pending.push(PendingWrite::Entries(entries));
                sim.writes_requested += 1;
            }
            Action::PersistSnapshot {
                last_included_index,
                last_included_term,
                membership,
                bytes,
            } => {
                SafetyChecker::check_snapshot_within_commit(
                    node,
                    last_included_index,
                    engine.commit_index(),
                )?;
                sim.pending.push(PendingWrite::Snapshot(StoredSnapshot {
                    last_included_index,
                    last_included_term,
                    membership,
                    bytes,
                }));
                sim.writes_requested += 1;
            }
            other => {
                if sim.writes_durable == sim.writes_requested {
                    self.perform(node, other)?;
                } else {
                    sim.held.push((sim.writes_requested, other));
                }
            }
        }
        Ok(())
    }

    /// Makes one write durable on `node`'s disk. Log Matching is checked here, when entries
    /// become durable: an entry requested but lost in a crash never existed for anyone else.
    fn make_durable(
        checker: &mut SafetyChecker,
        sim: &mut SimNode,
        write: PendingWrite,
    ) -> Result<(), Violation> {
        let stored = match &write {
            PendingWrite::Entries(entries) => entries.clone(),
            _ => Vec::new(),
        };
        sim.disk.apply(write);
        SafetyChecker::check_recoverable(sim.id, &sim.disk)?;
        for entry in &stored {
            let previous = sim.disk.term_at(entry.index.prev()).unwrap_or(Term::ZERO);
            checker.observe_stored(sim.id, entry, previous)?;
        }
        Ok(())
    }

    /// Makes the pending writes durable one by one, in order, performing each held action as
    /// soon as every write requested before it is durable (and before any write requested
    /// after it): the order a host that fsyncs and then acts would produce.
    fn flush_node(&mut self, node: NodeId) -> Result<(), Violation> {
        loop {
            let Some(sim) = self.nodes.get_mut(&node) else {
                return Ok(());
            };
            let ready = sim
                .held
                .first()
                .is_some_and(|(required, _)| *required <= sim.writes_durable);
            if ready {
                let (_, action) = sim.held.remove(0);
                self.perform(node, action)?;
                continue;
            }
            if sim.pending.is_empty() {
                return Ok(());
            }
            let write = sim.pending.remove(0);
            Self::make_durable(&mut self.checker, sim, write)?;
            sim.writes_durable += 1;
        }
    }

    /// Performs an action whose persistence prerequisites are met.
    fn perform(&mut self, node: NodeId, action: Action<Command>) -> Result<(), Violation> {
        match action {
            Action::Send { to, message } => {
                let Some(sim) = self.nodes.get(&node) else {
                    return Ok(());
                };
                SafetyChecker::check_send_ordering(&sim.disk, to, &message)?;
                match &message.rpc {
                    Rpc::RequestVoteResponse(VoteResponse { granted: true }) => {
                        self.checker.observe_vote(node, to, message.term)?;
                        self.last_vote_granter = Some(node);
                    }
                    Rpc::AppendEntriesResponse(response)
                        if response.outcome != AppendOutcome::StaleTerm =>
                    {
                        self.last_round_acknowledger = Some(node);
                    }
                    Rpc::InstallSnapshotResponse(_) => self.last_round_acknowledger = Some(node),
                    _ => {}
                }
                self.network.send(Envelope { to, message });
            }
            Action::Apply(entries) => {
                for entry in entries {
                    self.apply_entry(node, entry)?;
                }
            }
            Action::ApplySnapshot { bytes } => self.restore_snapshot(node, &bytes)?,
            Action::ReadReady { id } => {
                if let Some(read) = self.history.read_answered(node, id) {
                    let applied = self.nodes[&node].state_machine.last_applied;
                    SafetyChecker::check_read(node, id, read.required, applied)?;
                }
                self.coverage.reads_served += 1;
            }
            Action::ReadFailed { id, .. } => {
                self.history.read_answered(node, id);
                self.coverage.reads_failed += 1;
            }
            _ => {}
        }
        Ok(())
    }

    /// Applies one committed entry to `node`'s state machine, checking it against every other
    /// node's history and answering the client that proposed it.
    fn apply_entry(
        &mut self,
        node: NodeId,
        entry: yggr_core::LogEntry<Command>,
    ) -> Result<(), Violation> {
        let Some(sim) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        let expected = sim.state_machine.last_applied.next();
        if entry.index != expected {
            return Err(Violation {
                invariant: Invariant::HostContract,
                detail: format!(
                    "node {node} was asked to apply {} after {}",
                    entry.index, sim.state_machine.last_applied
                ),
            });
        }
        let command = match entry.payload {
            EntryPayload::Command(command) => Some(command),
            _ => None,
        };
        // An entry counts as committed once the host applies it: the ordering contract holds
        // every apply until the writes before it are durable, so this is the commit the
        // outside world can observe.
        let observer_term = sim
            .engine
            .as_ref()
            .map_or(entry.term, |engine| engine.current_term());
        self.checker
            .observe_committed(node, entry.index, entry.term, observer_term)?;
        sim.state_machine = sim.state_machine.applied(entry.index, command);
        let digest = sim.state_machine.digest;
        self.checker
            .observe_applied(node, entry.index, command, digest)?;
        self.history.applied(node, &entry);
        if entry.index > self.highest_applied {
            self.highest_applied = entry.index;
            self.count_configuration_change(&entry);
        }
        Ok(())
    }

    fn count_configuration_change(&mut self, entry: &yggr_core::LogEntry<Command>) {
        let EntryPayload::ConfigChange { change, .. } = entry.payload else {
            return;
        };
        self.coverage.membership_changes += 1;
        match change {
            ConfigChange::AddLearner(_) => self.coverage.learners_added += 1,
            ConfigChange::PromoteLearner(_) => self.coverage.promotions += 1,
            ConfigChange::RemovePeer(removed)
                if self.checker.leader_of(entry.term) == Some(removed) =>
            {
                self.coverage.leader_removals += 1;
            }
            _ => {}
        }
    }

    /// Replaces `node`'s state machine with a snapshot from its leader.
    fn restore_snapshot(&mut self, node: NodeId, bytes: &[u8]) -> Result<(), Violation> {
        let Some(state) = TrackedStateMachine::from_bytes(bytes) else {
            return Err(Violation {
                invariant: Invariant::HostContract,
                detail: format!(
                    "node {node} received {} snapshot bytes that no state machine wrote",
                    bytes.len()
                ),
            });
        };
        let Some(sim) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        SafetyChecker::check_applied_moves_forward(
            node,
            sim.state_machine.last_applied,
            state.last_applied,
        )?;
        self.checker
            .observe_restored(node, state.last_applied, state.digest)?;
        sim.state_machine = state;
        self.coverage.snapshots_installed += 1;
        let started = self.snapshot_started_at.remove(&node);
        if started.is_some_and(|started| self.step_count - started > self.long_transfer_steps) {
            self.coverage.long_snapshot_installs += 1;
        }
        // The waiting clients' entries are inside the snapshot or overwritten; this node can no
        // longer tell which.
        self.history.abandon(node);
        Ok(())
    }

    /// Every leader's match indexes against the disks of the followers in its term.
    fn check_match_indexes(&self) -> Result<(), Violation> {
        for sim in self.nodes.values() {
            let Some(engine) = sim.engine.as_ref() else {
                continue;
            };
            if engine.role() != Role::Leader {
                continue;
            }
            let term = engine.current_term();
            for (follower, (match_index, _)) in engine.follower_progress() {
                let Some(peer) = self.nodes.get(&follower) else {
                    continue;
                };
                let same_term = peer
                    .engine
                    .as_ref()
                    .is_some_and(|other| other.current_term() == term);
                if same_term {
                    SafetyChecker::check_match_index(
                        sim.id,
                        follower,
                        match_index,
                        engine.term_at(match_index),
                        &peer.disk,
                    )?;
                }
            }
        }
        Ok(())
    }

    /// The checks run after every step, over every running node.
    fn check_after_step(&mut self) -> Result<(), Violation> {
        let mut leaders = 0;
        for sim in self.nodes.values_mut() {
            let Some(engine) = sim.engine.as_ref() else {
                continue;
            };
            engine.check_invariants();
            let commit = engine.commit_index();
            // The engine's commit index, entry by entry, as soon as the entry is durable here
            // too. (A leader that alone is a majority commits before its fsync; its commit
            // only counts once the entry is on disk, and nothing leaves the node before that.)
            while sim.observed_commit < commit {
                let index = sim.observed_commit.next();
                let Some(term) = engine.term_at(index) else {
                    // Compacted: covered by a snapshot, which only holds committed entries.
                    // The configuration in force is unknown until the walk reaches the commit
                    // index or a configuration entry.
                    sim.observed_commit = index;
                    sim.observed_configuration = None;
                    continue;
                };
                if sim.disk.term_at(index) != Some(term) {
                    break;
                }
                self.checker
                    .observe_committed(sim.id, index, term, engine.current_term())?;
                // §4.3: a configuration is in force from its own entry on. At the commit index
                // the engine's own account is the one compared.
                let configuration = if index == commit {
                    Some(engine.committed_membership())
                } else {
                    match engine.entry(index).map(|entry| &entry.payload) {
                        Some(EntryPayload::ConfigChange { membership, .. }) => Some(membership),
                        // The snapshot's own index: its configuration is not in view.
                        None => {
                            sim.observed_configuration = None;
                            None
                        }
                        Some(_) => None,
                    }
                };
                if let Some(membership) = configuration {
                    sim.observed_configuration = known_configuration(
                        &mut self.checker,
                        sim.observed_configuration,
                        membership,
                    );
                }
                if let Some(configuration) = sim.observed_configuration {
                    self.checker
                        .observe_committed_configuration(sim.id, index, configuration)?;
                }
                sim.observed_commit = index;
            }
            if engine.role() != Role::Leader {
                if sim.observed_leader_term.take().is_some() {
                    // Stepped down: a runtime fails the clients waiting on this node.
                    self.history.abandon(sim.id);
                }
                continue;
            }
            leaders += 1;
            let term = engine.current_term();
            self.checker.observe_leader(sim.id, term)?;
            if sim.observed_leader_term != Some(term) {
                sim.observed_leader_term = Some(term);
                self.checker.check_leader_complete(sim.id, term, engine)?;
            }
            // Only the uncommitted tail matters; walking it keeps the check O(tail). A new
            // leader may not have learned yet what its predecessor committed, so "committed"
            // is judged by what any node has seen committed.
            let committed = commit.max(self.checker.max_committed());
            let last = engine.last_log_index();
            let tail = (committed.get() + 1..=last.get())
                .filter_map(|raw| engine.entry(LogIndex::new(raw)))
                .map(|e| {
                    (
                        e.index,
                        matches!(e.payload, EntryPayload::ConfigChange { .. }),
                    )
                });
            SafetyChecker::check_single_config_change(sim.id, tail, committed)?;
        }
        self.check_match_indexes()?;
        if leaders >= 2 && self.leaders_after_last_step < 2 {
            self.coverage.stale_leader_windows += 1;
        }
        self.leaders_after_last_step = leaders;
        Ok(())
    }
}
