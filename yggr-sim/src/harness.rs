//! The simulated cluster: N engines, each with a simulated disk, a tracked state machine and a
//! host loop that obeys the engine's ordering contract. It doubles as a reference host.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr_core::{
    Action, Engine, EngineConfig, EntryPayload, Event, LogIndex, Membership, NodeId, RandomEnv,
    Role, Term,
};

use crate::checker::{SafetyChecker, Violation};
use crate::disk::{DurableState, PendingWrite, StoredSnapshot};
use crate::network::{Delivery, Envelope, Network, NetworkFaults};
use crate::trace::Trace;

/// The command type the simulator replicates: a unique id per proposal, so that any mix-up
/// between two commands is visible.
pub type Command = u64;

/// A state machine that records what it applied as a running digest, so that two nodes'
/// states compare in O(1) and a snapshot is 16 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackedStateMachine {
    /// The last index applied (or restored from a snapshot).
    pub last_applied: LogIndex,
    /// A digest of every entry applied so far, in order.
    pub digest: u64,
}

impl TrackedStateMachine {
    /// The state after applying the entry at `index` carrying `command` (`None` for entries
    /// without one).
    pub fn applied(self, index: LogIndex, command: Option<Command>) -> TrackedStateMachine {
        let mut digest = self.digest ^ index.get().rotate_left(17);
        digest = mix(digest ^ command.map_or(0x9e37_79b9, |c| c.wrapping_mul(0x2545_f491)));
        TrackedStateMachine {
            last_applied: index,
            digest,
        }
    }

    /// The snapshot encoding: last applied index, then digest, little-endian.
    pub fn to_bytes(self) -> Bytes {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&self.last_applied.get().to_le_bytes());
        bytes.extend_from_slice(&self.digest.to_le_bytes());
        Bytes::from(bytes)
    }

    /// Decodes a snapshot; `None` for anything but 16 bytes.
    pub fn from_bytes(bytes: &[u8]) -> Option<TrackedStateMachine> {
        let index: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let digest: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        (bytes.len() == 16).then(|| TrackedStateMachine {
            last_applied: LogIndex::new(u64::from_le_bytes(index)),
            digest: u64::from_le_bytes(digest),
        })
    }
}

/// SplitMix64's finaliser: a cheap, well-mixed 64-bit hash step.
fn mix(mut value: u64) -> u64 {
    value = (value ^ (value >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    value = (value ^ (value >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    value ^ (value >> 31)
}

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
    /// The term this node was last seen leading.
    observed_leader_term: Option<Term>,
}

impl SimNode {
    /// Whether the node is running.
    pub fn is_up(&self) -> bool {
        self.engine.is_some()
    }
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
        }
    }
}

/// A failed run: the invariant, where it broke, and how to replay it.
#[derive(Clone, Debug)]
pub struct SimError {
    /// The seed of the run.
    pub seed: u64,
    /// The step at which the violation was observed (1-based).
    pub step: u64,
    /// The broken invariant.
    pub violation: Violation,
    /// A shell command that replays the run with a step-by-step trace.
    pub replay: String,
}

impl std::fmt::Display for SimError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "{} (seed {}, step {})\nreplay: {}",
            self.violation, self.seed, self.step, self.replay
        )
    }
}

impl std::error::Error for SimError {}

/// N simulated servers, the network between them, and the safety checker watching them.
#[derive(Debug)]
pub struct Cluster {
    /// The servers by id.
    pub nodes: BTreeMap<NodeId, SimNode>,
    /// Messages in flight.
    pub network: Network,
    /// The invariant checker.
    pub checker: SafetyChecker,
    /// The run's random source: every choice the simulator makes comes from here.
    pub rng: ChaCha8Rng,
    /// Steps taken so far.
    pub step_count: u64,
    /// A readable record of the run, when enabled.
    pub trace: Trace,
    /// Extra environment for the replay command (policy and workload), set by the policy.
    pub replay_env: String,
    seed: u64,
    founding: Membership,
    joiners: BTreeSet<NodeId>,
    config: EngineConfig,
    next_command: Command,
    next_read: u64,
    /// Reads in progress: (node, read id) to the highest index committed anywhere when the
    /// read was proposed.
    reads: BTreeMap<(NodeId, u64), LogIndex>,
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
            rng: ChaCha8Rng::seed_from_u64(options.seed),
            step_count: 0,
            trace: Trace::disabled(),
            replay_env: String::new(),
            seed: options.seed,
            founding,
            joiners,
            config: options.engine,
            next_command: 1,
            next_read: 1,
            reads: BTreeMap::new(),
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

    /// The engine of `node`, if it is up.
    pub fn engine(&self, node: NodeId) -> Option<&Engine<Command>> {
        self.nodes.get(&node).and_then(|n| n.engine.as_ref())
    }

    /// The leader of the highest term among running nodes.
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes
            .values()
            .filter_map(|n| n.engine.as_ref())
            .filter(|e| e.role() == Role::Leader)
            .max_by_key(|e| e.current_term())
            .map(|e| e.id())
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
            invariant: crate::checker::Invariant::HostContract,
            detail: format!("engine config rejected: {error}"),
        })?;
        engine
            .recover_from(sim.disk.recovered())
            .map_err(|error| Violation {
                invariant: crate::checker::Invariant::HostContract,
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
        sim.engine = Some(engine);
        Ok(())
    }

    fn violation(&self, violation: Violation) -> SimError {
        SimError {
            seed: self.seed,
            step: self.step_count,
            violation,
            replay: format!(
                "YGGR_SIM_SEED={} YGGR_SIM_NODES={} YGGR_SIM_STEPS={} {} cargo run --release -p yggr-sim --example replay",
                self.seed,
                self.nodes.len() - self.joiners.len(),
                self.step_count,
                self.replay_env
            ),
        }
    }

    // ---- Steps: each is one unit of simulated progress, followed by the invariant checks ----

    /// Feeds `event` to `node` (if up) and carries out what it asks.
    pub fn step_node(&mut self, node: NodeId, event: Event<Command>) -> Result<(), SimError> {
        self.step_count += 1;
        self.trace.event(self.step_count, node, &event);
        let result = self
            .feed(node, event)
            .and_then(|()| self.check_after_step());
        result.map_err(|violation| self.violation(violation))
    }

    /// Delivers one message from the network (its choice of which, and its fate).
    pub fn deliver_one(&mut self) -> Result<bool, SimError> {
        let Some(delivery) = self.network.next_delivery(&mut self.rng) else {
            return Ok(false);
        };
        match delivery {
            Delivery::Deliver(Envelope { to, message }) => {
                self.step_node(to, Event::Incoming(message))?;
            }
            Delivery::Dropped(envelope) => self.trace.fault(self.step_count, "dropped", &envelope),
            Delivery::Partitioned(envelope) => {
                self.trace.fault(self.step_count, "partitioned", &envelope);
            }
        }
        Ok(true)
    }

    /// Proposes a fresh command at `node`.
    pub fn propose(&mut self, node: NodeId) -> Result<Command, SimError> {
        let command = self.next_command;
        self.next_command += 1;
        self.step_node(node, Event::ClientProposal(command))?;
        Ok(command)
    }

    /// Proposes a linearizable read at `node`, remembering what it must observe.
    pub fn propose_read(&mut self, node: NodeId) -> Result<(), SimError> {
        let id = self.next_read;
        self.next_read += 1;
        self.reads.insert((node, id), self.checker.max_committed());
        self.step_node(node, Event::ProposeRead { id })
    }

    /// Makes every pending write of `node` durable, then carries out what waited for it.
    pub fn flush(&mut self, node: NodeId) -> Result<(), SimError> {
        self.step_count += 1;
        let result = self.flush_node(node).and_then(|()| self.check_after_step());
        result.map_err(|violation| self.violation(violation))
    }

    /// Flushes every node.
    pub fn flush_all(&mut self) -> Result<(), SimError> {
        for node in self.ids() {
            if self.nodes[&node].pending.is_empty() && self.nodes[&node].held.is_empty() {
                continue;
            }
            self.flush(node)?;
        }
        Ok(())
    }

    /// Crashes `node`. With `partial_flush`, a random prefix of its pending writes reaches the
    /// disk first (an fsync that was under way); everything else in memory is lost.
    pub fn crash(&mut self, node: NodeId, partial_flush: bool) -> Result<(), SimError> {
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
            let surviving: Vec<PendingWrite> = sim.pending.drain(..).take(keep).collect();
            for write in surviving {
                if let Err(violation) = Self::make_durable(&mut self.checker, sim, write) {
                    return Err(self.violation(violation));
                }
            }
            sim.held.clear();
            self.reads.retain(|(reader, _), _| *reader != node);
            sim.writes_requested = 0;
            sim.writes_durable = 0;
            sim.engine = None;
            sim.state_machine = TrackedStateMachine::default();
        }
        self.network.forget_node(node);
        Ok(())
    }

    /// Restarts a crashed `node` from its durable state.
    pub fn restart(&mut self, node: NodeId) -> Result<(), SimError> {
        self.step_count += 1;
        self.trace
            .note(self.step_count, format!("restart node {node}"));
        let result = self.start(node).and_then(|()| self.check_after_step());
        result.map_err(|violation| self.violation(violation))
    }

    /// Tells `node` the host took a snapshot of its state machine as it stands.
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
        self.step_node(
            node,
            Event::SnapshotTaken {
                last_included_index: state.last_applied,
                bytes: state.to_bytes(),
            },
        )
    }

    /// Splits the cluster at random into two sides.
    pub fn partition_randomly(&mut self) {
        let ids = self.ids();
        let mut left = BTreeSet::new();
        let mut right = BTreeSet::new();
        for id in ids {
            if self.rng.random_bool(0.5) {
                left.insert(id);
            } else {
                right.insert(id);
            }
        }
        self.trace
            .note(self.step_count, format!("partition {left:?} | {right:?}"));
        self.network.partition(vec![left, right]);
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
        let actions = engine.step(event);
        self.trace.actions(self.step_count, node, &actions);
        for action in actions {
            self.host_action(node, action)?;
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
        let Some(sim) = self.nodes.get_mut(&node) else {
            return Ok(());
        };
        match action {
            Action::Send { to, message } => {
                SafetyChecker::check_send_ordering(&sim.disk, to, &message)?;
                self.network.send(Envelope { to, message });
            }
            Action::Apply(entries) => {
                for entry in entries {
                    let expected = sim.state_machine.last_applied.next();
                    if entry.index != expected {
                        return Err(Violation {
                            invariant: crate::checker::Invariant::HostContract,
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
                    // An entry counts as committed once the host applies it: the ordering
                    // contract holds every apply until the writes before it are durable, so
                    // this is the commit the outside world can observe. (A leader that is a
                    // majority on its own counts its entries before they are fsynced; nothing
                    // it does with that commit leaves the node before the fsync.)
                    self.checker
                        .observe_committed(node, entry.index, entry.term)?;
                    sim.state_machine = sim.state_machine.applied(entry.index, command);
                    let digest = sim.state_machine.digest;
                    self.checker
                        .observe_applied(node, entry.index, command, digest)?;
                }
            }
            Action::ApplySnapshot { bytes } => {
                let Some(state) = TrackedStateMachine::from_bytes(&bytes) else {
                    return Err(Violation {
                        invariant: crate::checker::Invariant::HostContract,
                        detail: format!("node {node} received snapshot bytes it did not write"),
                    });
                };
                self.checker
                    .observe_restored(node, state.last_applied, state.digest)?;
                sim.state_machine = state;
            }
            Action::ReadReady { id } => {
                if let Some(required) = self.reads.remove(&(node, id)) {
                    SafetyChecker::check_read(node, id, required, sim.state_machine.last_applied)?;
                }
            }
            Action::ReadFailed { id, .. } => {
                self.reads.remove(&(node, id));
            }
            _ => {}
        }
        Ok(())
    }

    /// The checks run after every step, over every running node.
    fn check_after_step(&mut self) -> Result<(), Violation> {
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
                    sim.observed_commit = index;
                    continue;
                };
                if sim.disk.term_at(index) != Some(term) {
                    break;
                }
                self.checker.observe_committed(sim.id, index, term)?;
                sim.observed_commit = index;
            }
            if engine.role() == Role::Leader {
                let term = engine.current_term();
                self.checker.observe_leader(sim.id, term)?;
                if sim.observed_leader_term != Some(term) {
                    sim.observed_leader_term = Some(term);
                    self.checker.check_leader_complete(sim.id, term, engine)?;
                }
                // Only the uncommitted tail matters; walking it keeps the check O(tail). A new
                // leader may not have learned yet what its predecessor committed, so
                // "committed" is judged by what any node has seen committed.
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
        }
        Ok(())
    }
}
