//! [`LocalNetwork`]: nodes in one process, connected by channels, with faults for tests.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;
use tokio::time::Instant;
use yggr_core::{Message, NodeId};

use super::Transport;

/// How many messages may wait for one node before more are dropped (Raft retransmits).
pub const INBOUND_CAPACITY: usize = 4096;

/// An in-process network. Clone it freely: clones are the same network. Each node gets its
/// endpoint from [`LocalNetwork::transport`]; calling it again for a node that shut down gives
/// a fresh endpoint for its restart.
///
/// Faults, for tests: [`set_drop_rate`](LocalNetwork::set_drop_rate),
/// [`set_delay`](LocalNetwork::set_delay), [`partition`](LocalNetwork::partition),
/// [`isolate`](LocalNetwork::isolate), [`cut`](LocalNetwork::cut) and
/// [`heal`](LocalNetwork::heal). Randomness comes from a seed
/// ([`set_seed`](LocalNetwork::set_seed)).
#[derive(Clone, Debug, Default)]
pub struct LocalNetwork {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    /// Set while any fault is configured: senders then take the slow path through `state`.
    faulty: AtomicBool,
    /// Bumped whenever an endpoint is added or replaced, so senders refresh their cache.
    generation: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    endpoints: BTreeMap<NodeId, mpsc::Sender<Message<Bytes>>>,
    drop_rate: f64,
    delay: Option<Range<Duration>>,
    /// Links that carry nothing, as `(from, to)`.
    blocked: BTreeSet<(NodeId, NodeId)>,
    rng: Option<ChaCha8Rng>,
    /// The task that holds delayed messages until they are due, once one is needed.
    delayer: Option<mpsc::UnboundedSender<Delayed>>,
    delivered: u64,
    dropped: u64,
}

#[derive(Debug)]
struct Delayed {
    due: Instant,
    to: NodeId,
    message: Message<Bytes>,
}

impl State {
    fn rng(&mut self) -> &mut ChaCha8Rng {
        self.rng.get_or_insert_with(|| ChaCha8Rng::seed_from_u64(0))
    }

    fn has_faults(&self) -> bool {
        self.drop_rate > 0.0 || self.delay.is_some() || !self.blocked.is_empty()
    }
}

impl LocalNetwork {
    /// A network with no nodes and no faults.
    pub fn new() -> LocalNetwork {
        LocalNetwork::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.lock();
        change(&mut state);
        self.shared
            .faulty
            .store(state.has_faults(), Ordering::Release);
    }

    /// The endpoint for node `id`, replacing any earlier one (a restarted node gets a fresh
    /// inbox; messages waiting in the old one are gone, as they would be on a real restart).
    ///
    /// Call it for a node that is still running and that node loses its endpoint: its
    /// transport closes and it stops with a fatal error (logged as a warning here, since it is
    /// almost always two nodes given the same id).
    pub fn transport(&self, id: NodeId) -> LocalTransport {
        let (sender, inbound) = mpsc::channel(INBOUND_CAPACITY);
        if let Some(previous) = self.lock().endpoints.insert(id, sender)
            && !previous.is_closed()
        {
            tracing::warn!(target: "yggr::node", node_id = id.get(), "a new endpoint replaces one still in use: the node holding it stops");
        }
        self.shared.generation.fetch_add(1, Ordering::AcqRel);
        LocalTransport {
            id,
            network: self.clone(),
            inbound,
            peers: BTreeMap::new(),
            generation: u64::MAX,
        }
    }

    /// Seeds the randomness behind drops and delays.
    pub fn set_seed(&self, seed: u64) {
        self.update(|state| state.rng = Some(ChaCha8Rng::seed_from_u64(seed)));
    }

    /// Drops each message with probability `rate` (0 to 1).
    pub fn set_drop_rate(&self, rate: f64) {
        self.update(|state| state.drop_rate = rate.clamp(0.0, 1.0));
    }

    /// Delays each message by a duration drawn from `range`; an empty range removes delays.
    /// Messages with different delays overtake each other, and a delayed message whose link
    /// is cut before it arrives is lost.
    pub fn set_delay(&self, range: Range<Duration>) {
        self.update(|state| state.delay = (!range.is_empty()).then_some(range));
    }

    /// Splits the nodes into `sides`: a node reaches only the nodes on its own side. Replaces
    /// any earlier partition or cut.
    pub fn partition<Side: IntoIterator<Item = NodeId>>(
        &self,
        sides: impl IntoIterator<Item = Side>,
    ) {
        let sides: Vec<BTreeSet<NodeId>> = sides
            .into_iter()
            .map(|side| side.into_iter().collect())
            .collect();
        self.update(|state| {
            state.blocked.clear();
            for (position, side) in sides.iter().enumerate() {
                for other in sides.iter().skip(position + 1) {
                    for a in side {
                        for b in other {
                            state.blocked.insert((*a, *b));
                            state.blocked.insert((*b, *a));
                        }
                    }
                }
            }
        });
    }

    /// Cuts `node` off from every node that has an endpoint.
    pub fn isolate(&self, node: NodeId) {
        self.update(|state| {
            let others: Vec<NodeId> = state.endpoints.keys().copied().collect();
            for other in others.into_iter().filter(|other| *other != node) {
                state.blocked.insert((node, other));
                state.blocked.insert((other, node));
            }
        });
    }

    /// Blocks the one-way link from `from` to `to`.
    pub fn cut(&self, from: NodeId, to: NodeId) {
        self.update(|state| {
            state.blocked.insert((from, to));
        });
    }

    /// Removes every partition and cut (drops and delays stay as set).
    pub fn heal(&self) {
        self.update(|state| state.blocked.clear());
    }

    /// Messages handed to an endpoint, and messages dropped (by a fault, a cut link, a full
    /// inbox or a node without an endpoint), counted while any fault is configured: the
    /// fault-free path takes no lock and counts nothing.
    pub fn counters(&self) -> (u64, u64) {
        let state = self.lock();
        (state.delivered, state.dropped)
    }

    /// The slow path of a send, with faults applied.
    fn send_with_faults(&self, from: NodeId, to: NodeId, message: Message<Bytes>) {
        let mut state = self.lock();
        if state.blocked.contains(&(from, to)) {
            state.dropped += 1;
            return;
        }
        let drop_rate = state.drop_rate;
        if drop_rate > 0.0 && state.rng().random_bool(drop_rate) {
            state.dropped += 1;
            return;
        }
        if let Some(range) = state.delay.clone() {
            let delay = state.rng().random_range(range);
            let delayed = Delayed {
                due: Instant::now() + delay,
                to,
                message,
            };
            let delayer = state
                .delayer
                .get_or_insert_with(|| spawn_delayer(self.clone()));
            if delayer.send(delayed).is_err() {
                state.dropped += 1;
            }
            return;
        }
        deliver(&mut state, to, message);
    }
}

/// Hands `message` to `to`'s inbox, or counts it dropped.
fn deliver(state: &mut State, to: NodeId, message: Message<Bytes>) {
    let accepted = state
        .endpoints
        .get(&to)
        .is_some_and(|inbox| inbox.try_send(message).is_ok());
    if accepted {
        state.delivered += 1;
    } else {
        state.dropped += 1;
    }
}

/// A task that holds delayed messages and delivers each when it is due. One per network, not
/// one per message.
fn spawn_delayer(network: LocalNetwork) -> mpsc::UnboundedSender<Delayed> {
    let (sender, mut incoming) = mpsc::unbounded_channel::<Delayed>();
    tokio::spawn(async move {
        let mut waiting: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
        let mut messages: BTreeMap<u64, Delayed> = BTreeMap::new();
        let mut sequence = 0u64;
        loop {
            let next_due = waiting.peek().map(|Reverse((due, _))| *due);
            // Biased: tokio would otherwise pick a branch at random, from a generator no
            // seed reaches.
            tokio::select! {
                biased;
                arrived = incoming.recv() => {
                    let Some(delayed) = arrived else { break };
                    sequence += 1;
                    waiting.push(Reverse((delayed.due, sequence)));
                    messages.insert(sequence, delayed);
                }
                () = sleep_until_or_forever(next_due) => {
                    let now = Instant::now();
                    let mut state = network.lock();
                    while let Some(Reverse((due, key))) = waiting.peek().copied() {
                        if due > now {
                            break;
                        }
                        waiting.pop();
                        if let Some(delayed) = messages.remove(&key) {
                            // A link cut while the message was on its way loses it, as a
                            // partition would.
                            if state.blocked.contains(&(delayed.message.from, delayed.to)) {
                                state.dropped += 1;
                            } else {
                                deliver(&mut state, delayed.to, delayed.message);
                            }
                        }
                    }
                }
            }
        }
    });
    sender
}

async fn sleep_until_or_forever(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// One node's endpoint on a [`LocalNetwork`].
#[derive(Debug)]
pub struct LocalTransport {
    id: NodeId,
    network: LocalNetwork,
    inbound: mpsc::Receiver<Message<Bytes>>,
    /// Senders to each peer's inbox, refreshed when the network's generation moves.
    peers: BTreeMap<NodeId, mpsc::Sender<Message<Bytes>>>,
    generation: u64,
}

impl LocalTransport {
    /// The node this endpoint belongs to.
    pub fn id(&self) -> NodeId {
        self.id
    }
}

impl Transport for LocalTransport {
    fn send(&mut self, to: NodeId, message: Message<Bytes>) {
        let shared = &self.network.shared;
        if shared.faulty.load(Ordering::Acquire) {
            self.network.send_with_faults(self.id, to, message);
            return;
        }
        let generation = shared.generation.load(Ordering::Acquire);
        if generation != self.generation {
            self.peers = self.network.lock().endpoints.clone();
            self.generation = generation;
        }
        // The fast path: no lock, and no counting (counters are for tests with faults).
        if let Some(inbox) = self.peers.get(&to) {
            let _ = inbox.try_send(message);
        }
    }

    async fn recv(&mut self) -> Option<Message<Bytes>> {
        self.inbound.recv().await
    }

    fn try_recv(&mut self) -> Option<Message<Bytes>> {
        self.inbound.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use yggr_core::{Rpc, Term, VoteRequest};

    use super::*;
    use crate::LogIndex;

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).expect("nonzero")
    }

    fn probe(from: u64) -> Message<Bytes> {
        Message {
            from: id(from),
            term: Term::new(1),
            rpc: Rpc::RequestVote(VoteRequest {
                last_log_index: LogIndex::ZERO,
                last_log_term: Term::new(0),
                leadership_transfer: false,
            }),
        }
    }

    fn drain(transport: &mut LocalTransport) -> usize {
        std::iter::from_fn(|| transport.try_recv()).count()
    }

    #[tokio::test]
    async fn a_message_reaches_the_node_it_names_and_only_that_node() {
        let network = LocalNetwork::new();
        let mut one = network.transport(id(1));
        let mut two = network.transport(id(2));
        let mut three = network.transport(id(3));
        one.send(id(2), probe(1));
        assert_eq!(two.recv().await, Some(probe(1)));
        assert_eq!(drain(&mut three), 0);
        assert_eq!(drain(&mut one), 0);
    }

    #[tokio::test]
    async fn cuts_partitions_and_isolation_block_links_until_healed() {
        let network = LocalNetwork::new();
        let mut one = network.transport(id(1));
        let mut two = network.transport(id(2));
        let mut three = network.transport(id(3));
        network.cut(id(1), id(2));
        one.send(id(2), probe(1));
        two.send(id(1), probe(2));
        assert_eq!(
            (drain(&mut two), drain(&mut one)),
            (0, 1),
            "a cut is one-way"
        );
        network.partition([vec![id(1)], vec![id(2), id(3)]]);
        one.send(id(3), probe(1));
        two.send(id(3), probe(2));
        assert_eq!(drain(&mut three), 1, "only the same side gets through");
        network.heal();
        network.isolate(id(3));
        one.send(id(3), probe(1));
        three.send(id(2), probe(3));
        one.send(id(2), probe(1));
        assert_eq!((drain(&mut three), drain(&mut two)), (0, 1));
        network.heal();
        one.send(id(3), probe(1));
        assert_eq!(drain(&mut three), 1);
        let (delivered, dropped) = network.counters();
        assert_eq!(dropped, 4, "every blocked message is counted");
        assert_eq!(delivered, 3, "deliveries are counted while a fault is set");
    }

    #[tokio::test]
    async fn drops_follow_the_rate_and_the_seed() {
        let count_drops = |seed: u64| {
            let network = LocalNetwork::new();
            network.set_seed(seed);
            network.set_drop_rate(0.5);
            let mut one = network.transport(id(1));
            let mut two = network.transport(id(2));
            for _ in 0..1_000 {
                one.send(id(2), probe(1));
            }
            (1_000 - drain(&mut two), network.counters().1)
        };
        let (lost, counted) = count_drops(7);
        assert_eq!(lost as u64, counted);
        assert!(
            (350..650).contains(&lost),
            "{lost} of 1000 dropped at rate 0.5"
        );
        assert_eq!(
            count_drops(7),
            (lost, counted),
            "the same seed drops the same messages"
        );
        let network = LocalNetwork::new();
        network.set_drop_rate(1.0);
        let mut one = network.transport(id(1));
        let mut two = network.transport(id(2));
        one.send(id(2), probe(1));
        assert_eq!(drain(&mut two), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_message_arrives_once_its_delay_has_passed() {
        let network = LocalNetwork::new();
        network.set_delay(Duration::from_millis(50)..Duration::from_millis(51));
        let mut one = network.transport(id(1));
        let mut two = network.transport(id(2));
        let sent = Instant::now();
        one.send(id(2), probe(1));
        assert_eq!(drain(&mut two), 0);
        assert_eq!(two.recv().await, Some(probe(1)));
        assert!(sent.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test(start_paused = true)]
    async fn a_delayed_message_does_not_cross_a_partition_set_after_it_was_sent() {
        let network = LocalNetwork::new();
        network.set_delay(Duration::from_millis(50)..Duration::from_millis(51));
        let mut one = network.transport(id(1));
        let mut two = network.transport(id(2));
        one.send(id(2), probe(1));
        network.isolate(id(2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(drain(&mut two), 0);
        assert_eq!(network.counters().1, 1, "counted as dropped");
    }

    #[tokio::test]
    async fn a_restarted_node_gets_a_fresh_endpoint_that_peers_reach() {
        let network = LocalNetwork::new();
        let mut one = network.transport(id(1));
        let mut old = network.transport(id(2));
        one.send(id(2), probe(1));
        drop(old.try_recv());
        one.send(id(2), probe(1));
        drop(old);
        let mut restarted = network.transport(id(2));
        assert_eq!(
            drain(&mut restarted),
            0,
            "what waited in the old inbox is gone"
        );
        one.send(id(2), probe(1));
        assert_eq!(drain(&mut restarted), 1);
    }
}
