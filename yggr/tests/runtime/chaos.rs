//! Full-stack chaos: real Nodes (driver, apply task, MemStorage, LocalNetwork) under drops,
//! delays, partitions and restarts, with concurrent writers and linearizable readers. After
//! healing, the recorded history is checked, not eyeballed:
//!
//! - every acknowledged write is applied on every node, at the position its response named,
//!   in one order shared by all nodes;
//! - every read saw every write acknowledged before the read began, never less than a read
//!   that finished before it began, and nothing no client had yet asked for;
//! - no call hung: each was answered within a bound far above any election.
//!
//! Time is tokio's paused clock; the run is one thread, so a shared counter orders every
//! invocation and response exactly.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Recorder, id, test_config};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr::{Bootstrap, Config, LocalNetwork, MemStorage, Node, NodeId, ProposeError, ReadError};

/// A call that takes longer than this (virtual time) is a hang: every election, step-down and
/// drain finishes far sooner.
const HANG: Duration = Duration::from_secs(20);

/// The nodes of the run, as the clients find them: a restart replaces an entry.
type Directory = Arc<Mutex<BTreeMap<NodeId, Node<Recorder>>>>;

#[derive(Clone, Copy, Debug)]
struct Ack {
    command: u64,
    position: usize,
    /// When the write was acknowledged, on the shared order.
    answered: u64,
}

#[derive(Clone, Copy, Debug)]
struct Read {
    value: usize,
    invoked: u64,
    answered: u64,
}

#[derive(Default)]
struct History {
    acks: Vec<Ack>,
    reads: Vec<Read>,
    /// The first time each command was sent to any node.
    first_sent: HashMap<u64, u64>,
}

struct Run {
    network: LocalNetwork,
    directory: Directory,
    storage: BTreeMap<NodeId, MemStorage>,
    mirrors: BTreeMap<NodeId, Arc<Mutex<Vec<u64>>>>,
    history: Arc<Mutex<History>>,
    clock: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    members: Vec<NodeId>,
    restarts: u64,
}

fn chaos_config(me: NodeId, members: &[NodeId]) -> Config {
    let mut config = test_config(me, members.iter().copied().filter(|other| *other != me));
    config.bootstrap = Bootstrap::NewCluster {
        members: members.iter().copied().collect(),
    };
    // Compaction during the run, so restarts and laggards go through snapshots too.
    config.snapshot_hint_threshold_entries = 200;
    config
}

impl Run {
    async fn start(size: u64, seed: u64) -> Run {
        let network = LocalNetwork::new();
        network.set_seed(seed);
        let members: Vec<NodeId> = (1..=size).map(id).collect();
        let mut run = Run {
            network,
            directory: Directory::default(),
            storage: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            history: Arc::default(),
            clock: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            members: members.clone(),
            restarts: 0,
        };
        for me in members {
            run.launch(me).await;
        }
        run
    }

    async fn launch(&mut self, me: NodeId) {
        let mut config = chaos_config(me, &self.members);
        if self.storage.contains_key(&me) {
            config.bootstrap = Bootstrap::Recover;
        }
        let storage = self.storage.entry(me).or_default().clone();
        let recorder = Recorder::default();
        self.mirrors.insert(me, Arc::clone(&recorder.mirror));
        let node = Node::start(config, recorder, storage, self.network.transport(me))
            .await
            .expect("the node starts");
        self.directory.lock().unwrap().insert(me, node);
    }

    async fn restart(&mut self, me: NodeId) {
        let node = self.directory.lock().unwrap().remove(&me);
        if let Some(node) = node {
            node.shutdown().await.expect("a clean shutdown");
        }
        self.restarts += 1;
        self.launch(me).await;
    }

    fn tick(clock: &AtomicU64) -> u64 {
        clock.fetch_add(1, Ordering::Relaxed)
    }

    /// A writer: sends its own commands one at a time until told to stop, retrying each
    /// through redirects, elections and restarts until it is acknowledged.
    fn spawn_writer(&self, writer: u64, seed: u64) -> tokio::task::JoinHandle<()> {
        let impatient = writer.is_multiple_of(2);
        let directory = Arc::clone(&self.directory);
        let history = Arc::clone(&self.history);
        let clock = Arc::clone(&self.clock);
        let stop = Arc::clone(&self.stop);
        tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut target = None;
            for sequence in 0.. {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let command = (writer << 32) | sequence;
                loop {
                    let Some(node) = pick(&directory, target, &mut rng) else {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    };
                    history
                        .lock()
                        .unwrap()
                        .first_sent
                        .entry(command)
                        .or_insert_with(|| Run::tick(&clock));
                    // Half the writers give up on a slow attempt and try elsewhere, so writes
                    // land at a new leader while an old one still believes it leads; the
                    // others wait each call out, so a hung call is caught.
                    let patience = if impatient {
                        Duration::from_millis(rng.random_range(30..300))
                    } else {
                        HANG
                    };
                    let outcome = match tokio::time::timeout(patience, node.write(command)).await {
                        Ok(outcome) => outcome,
                        Err(_) if impatient => {
                            target = other_than(&directory, node.id(), &mut rng);
                            continue;
                        }
                        Err(_) => panic!("write {command} to {} hung", node.id()),
                    };
                    match outcome {
                        Ok(position) => {
                            let answered = Run::tick(&clock);
                            history.lock().unwrap().acks.push(Ack {
                                command,
                                position,
                                answered,
                            });
                            target = Some(node.id());
                            break;
                        }
                        Err(ProposeError::NotLeader { leader_hint }) => {
                            // Hints can be stale both ways round; a pause keeps two nodes
                            // that each name the other from spinning without time passing.
                            target = Some(leader_hint);
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        Err(
                            ProposeError::NoLeader
                            | ProposeError::Busy
                            | ProposeError::Shutdown
                            | ProposeError::DriverDead,
                        ) => {
                            target = None;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        // Appended, fate unknown: it may apply or not, so retrying it could
                        // apply it twice. Move on to the next command.
                        Err(ProposeError::OutcomeUnknown) => break,
                        Err(other) => panic!("write {command} failed: {other}"),
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        })
    }

    /// A reader: linearizable reads of how many commands were applied, one after another.
    fn spawn_reader(&self, seed: u64) -> tokio::task::JoinHandle<()> {
        let directory = Arc::clone(&self.directory);
        let history = Arc::clone(&self.history);
        let clock = Arc::clone(&self.clock);
        let stop = Arc::clone(&self.stop);
        tokio::spawn(async move {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut target = None;
            while !stop.load(Ordering::Relaxed) {
                let Some(node) = pick(&directory, target, &mut rng) else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let invoked = Run::tick(&clock);
                let outcome = tokio::time::timeout(
                    HANG,
                    node.read_linearizable(|state: &Recorder| state.applied.len()),
                )
                .await
                .unwrap_or_else(|_| panic!("a read at {} hung", node.id()));
                match outcome {
                    Ok(value) => {
                        let answered = Run::tick(&clock);
                        history.lock().unwrap().reads.push(Read {
                            value,
                            invoked,
                            answered,
                        });
                        target = Some(node.id());
                        tokio::time::sleep(Duration::from_millis(rng.random_range(0..20))).await;
                    }
                    Err(ReadError::NotLeader { leader_hint }) => {
                        target = Some(leader_hint);
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(
                        ReadError::NoLeader
                        | ReadError::SteppedDown
                        | ReadError::Shutdown
                        | ReadError::DriverDead,
                    ) => {
                        target = None;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(other) => panic!("a read failed: {other}"),
                }
            }
        })
    }

    /// Faults for `rounds` rounds: each round sets drops and delays, then partitions,
    /// isolates or restarts something for a while, then heals.
    async fn chaos(&mut self, rounds: u64, seed: u64) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for _ in 0..rounds {
            self.network.set_drop_rate(rng.random_range(0.0..0.15));
            let slowest = rng.random_range(1..40);
            self.network
                .set_delay(Duration::from_millis(0)..Duration::from_millis(slowest));
            let victim = self.members[rng.random_range(0..self.members.len())];
            match rng.random_range(0..4) {
                0 => self.network.isolate(victim),
                1 => {
                    let split = rng.random_range(1..self.members.len());
                    let (left, right) = self.members.split_at(split);
                    self.network.partition([left.to_vec(), right.to_vec()]);
                }
                2 => self.restart(victim).await,
                _ => {
                    let leader = self.current_leader();
                    if let Some(leader) = leader {
                        self.network.isolate(leader);
                    }
                }
            }
            let hold = rng.random_range(100..1_500);
            tokio::time::sleep(Duration::from_millis(hold)).await;
            self.network.heal();
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
        }
        self.network.heal();
        self.network.set_drop_rate(0.0);
        self.network.set_delay(Duration::ZERO..Duration::ZERO);
    }

    fn current_leader(&self) -> Option<NodeId> {
        let directory = self.directory.lock().unwrap();
        directory
            .values()
            .find(|node| node.current_leader() == Some(node.id()))
            .map(Node::id)
    }

    /// Waits until every node applied the same history, holding every acknowledged write.
    async fn converged(&self) -> Vec<u64> {
        let acked: Vec<u64> = self
            .history
            .lock()
            .unwrap()
            .acks
            .iter()
            .map(|ack| ack.command)
            .collect();
        crate::common::eventually(Duration::from_secs(60), || async {
            let records: Vec<Vec<u64>> = self
                .mirrors
                .values()
                .map(|mirror| mirror.lock().unwrap().clone())
                .collect();
            let first = records.first()?.clone();
            let same = records.iter().all(|record| *record == first);
            let complete = acked.iter().all(|command| first.contains(command));
            (same && complete).then_some(first)
        })
        .await
        .unwrap_or_else(|| {
            let counts: Vec<usize> = self
                .mirrors
                .values()
                .map(|mirror| mirror.lock().unwrap().len())
                .collect();
            panic!("the healed cluster did not converge: applied counts {counts:?}")
        })
    }

    async fn shutdown(self) {
        let nodes: Vec<Node<Recorder>> = self.directory.lock().unwrap().values().cloned().collect();
        for node in nodes {
            node.shutdown().await.expect("a clean shutdown");
        }
    }
}

/// The node a client tries next: the one it was pointed at, else one that believes it leads,
/// else any.
fn pick(
    directory: &Directory,
    target: Option<NodeId>,
    rng: &mut ChaCha8Rng,
) -> Option<Node<Recorder>> {
    let directory = directory.lock().unwrap();
    if let Some(node) = target.and_then(|target| directory.get(&target)) {
        return Some(node.clone());
    }
    if let Some(node) = directory
        .values()
        .find(|node| node.current_leader() == Some(node.id()))
    {
        return Some(node.clone());
    }
    let nodes: Vec<&Node<Recorder>> = directory.values().collect();
    (!nodes.is_empty()).then(|| nodes[rng.random_range(0..nodes.len())].clone())
}

/// Any node but `not`.
fn other_than(directory: &Directory, not: NodeId, rng: &mut ChaCha8Rng) -> Option<NodeId> {
    let others: Vec<NodeId> = directory
        .lock()
        .unwrap()
        .keys()
        .copied()
        .filter(|other| *other != not)
        .collect();
    (!others.is_empty()).then(|| others[rng.random_range(0..others.len())])
}

/// Checks the history against the common applied record `applied`.
fn check_history(history: &History, applied: &[u64]) {
    let mut seen = std::collections::HashSet::new();
    for ack in &history.acks {
        assert_eq!(
            applied.get(ack.position - 1),
            Some(&ack.command),
            "write {} was acknowledged at position {}, but the applied history has {:?} there",
            ack.command,
            ack.position,
            applied.get(ack.position - 1)
        );
        seen.insert(ack.command);
    }
    // Acknowledgements in the shared order, to find what each read must have seen.
    let mut acks = history.acks.clone();
    acks.sort_by_key(|ack| ack.answered);
    let mut reads = history.reads.clone();
    reads.sort_by_key(|read| read.invoked);
    let mut by_answer = history.reads.clone();
    by_answer.sort_by_key(|read| read.answered);
    for read in &reads {
        let must_see = acks
            .iter()
            .take_while(|ack| ack.answered < read.invoked)
            .map(|ack| ack.position)
            .max()
            .unwrap_or(0);
        assert!(
            read.value >= must_see,
            "a read invoked at {} returned {} applied commands, but the write at position \
             {must_see} was acknowledged before it began",
            read.invoked,
            read.value
        );
        let earlier = by_answer
            .iter()
            .take_while(|other| other.answered < read.invoked)
            .map(|other| other.value)
            .max()
            .unwrap_or(0);
        assert!(
            read.value >= earlier,
            "a read invoked at {} returned {}, less than the {earlier} a read finished before \
             it saw",
            read.invoked,
            read.value
        );
        for command in &applied[..read.value.min(applied.len())] {
            let sent = history.first_sent.get(command).copied();
            assert!(
                sent.is_some_and(|sent| sent < read.answered),
                "a read answered at {} saw command {command}, which no client had sent yet",
                read.answered
            );
        }
        assert!(
            read.value <= applied.len(),
            "a read saw more than was ever applied"
        );
    }
}

async fn chaos_run(size: u64, seed: u64) {
    let mut run = Run::start(size, seed).await;
    let writers: Vec<_> = (1..=4)
        .map(|writer| run.spawn_writer(writer, seed ^ writer))
        .collect();
    let readers: Vec<_> = (1..=3)
        .map(|reader| run.spawn_reader(seed ^ (reader << 16)))
        .collect();
    run.chaos(12, seed).await;
    run.stop.store(true, Ordering::Relaxed);
    for task in writers.into_iter().chain(readers) {
        tokio::time::timeout(HANG * 2, task)
            .await
            .expect("every client finishes its last call once the cluster heals")
            .expect("no client panicked");
    }
    let applied = run.converged().await;
    {
        let history = run.history.lock().unwrap();
        assert!(
            history.acks.len() >= 50,
            "only {} writes were acknowledged: the run exercised too little",
            history.acks.len()
        );
        assert!(
            history.reads.len() >= 50,
            "only {} reads were served: the run exercised too little",
            history.reads.len()
        );
        check_history(&history, &applied);
        eprintln!(
            "{size} nodes, seed {seed}: {} writes acknowledged, {} reads served, {} entries applied, \
             {} restarts",
            history.acks.len(),
            history.reads.len(),
            applied.len(),
            run.restarts
        );
    }
    // The healed cluster serves again.
    let leader = crate::common::eventually(Duration::from_secs(30), || async {
        let directory = run.directory.lock().unwrap().clone();
        let leader = directory
            .values()
            .find(|node| node.current_leader() == Some(node.id()))?
            .clone();
        leader.write(u64::MAX).await.ok().map(|_| leader)
    })
    .await
    .expect("the healed cluster acknowledges a fresh write");
    assert!(
        leader
            .read_linearizable(|state: &Recorder| state.applied.contains(&u64::MAX))
            .await
            .expect("the healed cluster serves a fresh read")
    );
    run.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn three_nodes_under_chaos_keep_every_acknowledged_write_and_serve_no_stale_read() {
    for seed in 1..=6 {
        chaos_run(3, seed).await;
    }
}

#[tokio::test(start_paused = true)]
async fn five_nodes_under_chaos_keep_every_acknowledged_write_and_serve_no_stale_read() {
    for seed in 11..=14 {
        chaos_run(5, seed).await;
    }
}

#[test]
fn the_history_check_rejects_a_stale_read() {
    let history = History {
        acks: vec![Ack {
            command: 7,
            position: 1,
            answered: 2,
        }],
        reads: vec![Read {
            value: 0,
            invoked: 3,
            answered: 4,
        }],
        first_sent: [(7, 1)].into_iter().collect(),
    };
    let outcome = std::panic::catch_unwind(|| check_history(&history, &[7]));
    assert!(
        outcome.is_err(),
        "a read that missed an acknowledged write passed"
    );
}

#[test]
fn the_history_check_rejects_an_acknowledgement_at_the_wrong_position() {
    let history = History {
        acks: vec![Ack {
            command: 7,
            position: 2,
            answered: 2,
        }],
        reads: Vec::new(),
        first_sent: [(7, 1)].into_iter().collect(),
    };
    let outcome = std::panic::catch_unwind(|| check_history(&history, &[7, 8]));
    assert!(
        outcome.is_err(),
        "a write acknowledged at the wrong position passed"
    );
}

#[test]
fn the_history_check_accepts_a_consistent_history() {
    let history = History {
        acks: vec![Ack {
            command: 7,
            position: 1,
            answered: 2,
        }],
        reads: vec![Read {
            value: 1,
            invoked: 3,
            answered: 4,
        }],
        first_sent: [(7, 1)].into_iter().collect(),
    };
    check_history(&history, &[7]);
}
