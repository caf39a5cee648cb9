//! A tiny in-memory host for engine tests: engines by id, a FIFO of messages in flight, and
//! helpers to run them until quiet. The full adversarial simulator lives in yggr-sim.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use yggr_core::{
    Action, Engine, EngineConfig, EntryPayload, Event, LogEntry, LogIndex, Membership, Message,
    NodeId, RandomEnv, Role, Rpc, Term,
};

pub fn id(raw: u64) -> NodeId {
    NodeId::new(raw).unwrap()
}

pub fn idx(raw: u64) -> LogIndex {
    LogIndex::new(raw)
}

pub fn term(raw: u64) -> Term {
    Term::new(raw)
}

pub fn engine(node: u64, voters: &[u64]) -> Engine<u64> {
    engine_with(node, voters, EngineConfig::default())
}

pub fn engine_with(node: u64, voters: &[u64], config: EngineConfig) -> Engine<u64> {
    let membership = Membership::from_voters(voters.iter().map(|v| id(*v)));
    Engine::with_config(id(node), membership, RandomEnv::seeded(node), config).unwrap()
}

pub fn entry(index: u64, entry_term: u64, command: u64) -> LogEntry<u64> {
    LogEntry {
        term: term(entry_term),
        index: idx(index),
        payload: EntryPayload::Command(command),
    }
}

pub fn sends(actions: &[Action<u64>]) -> Vec<(NodeId, Message<u64>)> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Send { to, message } => Some((*to, message.clone())),
            _ => None,
        })
        .collect()
}

pub fn applied(actions: &[Action<u64>]) -> Vec<LogEntry<u64>> {
    actions
        .iter()
        .filter_map(|action| match action {
            Action::Apply(entries) => Some(entries.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

pub fn applied_commands(actions: &[Action<u64>]) -> Vec<u64> {
    applied(actions)
        .into_iter()
        .filter_map(|entry| match entry.payload {
            EntryPayload::Command(command) => Some(command),
            _ => None,
        })
        .collect()
}

/// An AppendEntries after `(prev index, prev term)` carrying `entries`, with the leader's
/// commit index `commit`, in round 0.
pub fn append(prev: (u64, u64), entries: Vec<LogEntry<u64>>, commit: u64) -> Rpc<u64> {
    Rpc::AppendEntries(yggr_core::AppendEntries {
        prev_log_index: idx(prev.0),
        prev_log_term: term(prev.1),
        entries,
        leader_commit: idx(commit),
        round: 0,
    })
}

pub fn message(from: u64, message_term: u64, rpc: Rpc<u64>) -> Event<u64> {
    Event::Incoming(Message {
        from: id(from),
        term: term(message_term),
        rpc,
    })
}

/// Ticks `engine` until it changes role or `limit` ticks pass; returns every action.
pub fn tick_until_role_changes(engine: &mut Engine<u64>, limit: u64) -> Vec<Action<u64>> {
    let start = engine.role();
    let mut all = Vec::new();
    for _ in 0..limit {
        all.extend(engine.step(Event::Tick));
        if engine.role() != start {
            break;
        }
    }
    all
}

/// A cluster of engines with reliable, in-order delivery and link cuts.
pub struct Net {
    pub engines: BTreeMap<NodeId, Engine<u64>>,
    pub in_flight: VecDeque<(NodeId, Message<u64>)>,
    pub cut: BTreeSet<(NodeId, NodeId)>,
    pub applied: BTreeMap<NodeId, Vec<LogEntry<u64>>>,
    pub actions: BTreeMap<NodeId, Vec<Action<u64>>>,
}

impl Net {
    pub fn new(size: u64) -> Net {
        Net::with_config(size, EngineConfig::default())
    }

    pub fn with_config(size: u64, config: EngineConfig) -> Net {
        let voters: Vec<u64> = (1..=size).collect();
        let engines = voters
            .iter()
            .map(|v| (id(*v), engine_with(*v, &voters, config.clone())))
            .collect();
        Net {
            engines,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            actions: BTreeMap::new(),
        }
    }

    /// Engines for `nodes`, all starting from `membership` (which may name learners).
    pub fn with_membership(nodes: &[u64], membership: Membership, config: EngineConfig) -> Net {
        let engines = nodes
            .iter()
            .map(|node| {
                let engine = Engine::with_config(
                    id(*node),
                    membership.clone(),
                    RandomEnv::seeded(*node),
                    config.clone(),
                )
                .unwrap();
                (id(*node), engine)
            })
            .collect();
        Net {
            engines,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            applied: BTreeMap::new(),
            actions: BTreeMap::new(),
        }
    }

    /// Stops `node` for good: its engine is dropped and messages to it are lost.
    pub fn kill(&mut self, node: u64) {
        self.engines.remove(&id(node));
    }

    /// Delivers only the messages in flight now (one network hop); what they cause stays in
    /// flight. Returns how many were delivered.
    pub fn deliver_hop(&mut self) -> usize {
        let hop: Vec<_> = self.in_flight.drain(..).collect();
        hop.into_iter()
            .filter(|(to, message)| self.deliver(*to, message.clone()))
            .count()
    }

    /// Hands `message` to `to` unless the link is cut or `to` is gone; returns whether it
    /// arrived.
    pub fn deliver(&mut self, to: NodeId, message: Message<u64>) -> bool {
        if self.cut.contains(&(message.from, to)) || !self.engines.contains_key(&to) {
            return false;
        }
        let actions = self
            .engines
            .get_mut(&to)
            .unwrap()
            .step(Event::Incoming(message));
        self.absorb(to, &actions);
        true
    }

    pub fn engine(&self, node: u64) -> &Engine<u64> {
        &self.engines[&id(node)]
    }

    pub fn step(&mut self, node: u64, event: Event<u64>) -> Vec<Action<u64>> {
        let node = id(node);
        let actions = self.engines.get_mut(&node).unwrap().step(event);
        self.absorb(node, &actions);
        actions
    }

    fn absorb(&mut self, node: NodeId, actions: &[Action<u64>]) {
        for action in actions {
            match action {
                Action::Send { to, message } => self.in_flight.push_back((*to, message.clone())),
                Action::Apply(entries) => {
                    self.applied
                        .entry(node)
                        .or_default()
                        .extend(entries.iter().cloned());
                }
                _ => {}
            }
        }
        self.actions
            .entry(node)
            .or_default()
            .extend(actions.iter().cloned());
    }

    /// Delivers messages until none are left; returns how many were delivered.
    pub fn deliver_all(&mut self) -> usize {
        let mut delivered = 0;
        while let Some((to, message)) = self.in_flight.pop_front() {
            if self.deliver(to, message) {
                delivered += 1;
            }
        }
        delivered
    }

    pub fn tick_all(&mut self) {
        let nodes: Vec<NodeId> = self.engines.keys().copied().collect();
        for node in nodes {
            let actions = self.engines.get_mut(&node).unwrap().step(Event::Tick);
            self.absorb(node, &actions);
        }
    }

    /// Ticks only `node` until its election timer fires, then runs the cluster to quiet.
    pub fn campaign(&mut self, node: u64) {
        for _ in 0..100 {
            let before = self.engine(node).role();
            self.step(node, Event::Tick);
            if self.engine(node).role() != before {
                break;
            }
        }
        self.deliver_all();
    }

    /// Elects `node` and lets its no-op commit everywhere.
    pub fn elect(&mut self, node: u64) {
        self.campaign(node);
        assert_eq!(
            self.engine(node).role(),
            Role::Leader,
            "node {node} failed to win"
        );
        self.heartbeat(node);
    }

    /// One heartbeat interval on `node` (leader), then delivery to quiet.
    pub fn heartbeat(&mut self, node: u64) {
        let interval = self.engine(node).config().heartbeat_interval_ticks;
        for _ in 0..interval {
            self.step(node, Event::Tick);
        }
        self.deliver_all();
    }

    pub fn isolate(&mut self, node: u64) {
        let nodes: Vec<NodeId> = self.engines.keys().copied().collect();
        for other in nodes {
            self.cut.insert((id(node), other));
            self.cut.insert((other, id(node)));
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn leaders(&self) -> Vec<(NodeId, Term)> {
        self.engines
            .values()
            .filter(|engine| engine.role() == Role::Leader)
            .map(|engine| (engine.id(), engine.current_term()))
            .collect()
    }
}

/// Makes `engine` (a voter of a cluster of three with pre-vote on) win an election with the
/// pre-vote and vote of `voter` alone, delivering nothing else: it then leads with its no-op
/// appended but not yet committed.
pub fn win_election_with_vote_from(engine: &mut Engine<u64>, voter: u64) {
    use yggr_core::VoteResponse;
    tick_until_role_changes(engine, 100);
    assert_eq!(engine.role(), Role::PreCandidate);
    let probe = engine.current_term().get() + 1;
    engine.step(message(
        voter,
        probe,
        Rpc::RequestPreVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(engine.role(), Role::Candidate);
    let campaign = engine.current_term().get();
    engine.step(message(
        voter,
        campaign,
        Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    ));
    assert_eq!(engine.role(), Role::Leader);
}

/// An InstallSnapshot chunk of snapshot `index` (whose last entry has `snapshot_term`) of a
/// three-voter cluster.
pub fn snapshot_chunk(
    index: u64,
    snapshot_term: u64,
    offset: u64,
    data: &'static [u8],
    done: bool,
) -> Rpc<u64> {
    Rpc::InstallSnapshot(yggr_core::InstallSnapshot {
        last_included_index: idx(index),
        last_included_term: term(snapshot_term),
        membership: Membership::from_voters([id(1), id(2), id(3)]),
        offset,
        data: bytes::Bytes::from_static(data),
        done,
        round: 0,
    })
}

/// The next offset and the done flag of the InstallSnapshot answer among `actions`.
pub fn snapshot_reply(actions: &[Action<u64>]) -> (u64, bool) {
    sends(actions)
        .into_iter()
        .find_map(|(_, message)| match message.rpc {
            Rpc::InstallSnapshotResponse(answer) => Some((answer.next_offset, answer.done)),
            _ => None,
        })
        .expect("an InstallSnapshot answer")
}
