//! A test cluster: nodes in one process over `LocalNetwork` and `MemStorage`, a state machine
//! that records every command it applied, and helpers that wait on paused tokio time.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use yggr::{
    Bootstrap, Config, DecodeError, LocalNetwork, MemStorage, Node, NodeId, SnapshotError,
    StateMachine,
};

mod faulty_storage;
pub use faulty_storage::FaultyStorage;

pub fn id(raw: u64) -> NodeId {
    NodeId::new(raw).unwrap()
}

/// Records every command applied, in order, and mirrors the record where the test can see
/// it. Snapshots are the whole record.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub applied: Vec<u64>,
    pub mirror: Arc<Mutex<Vec<u64>>>,
}

impl Recorder {
    fn publish(&self) {
        *self.mirror.lock().unwrap() = self.applied.clone();
    }
}

impl StateMachine for Recorder {
    type Command = u64;
    /// How many commands were applied, this one included.
    type Response = usize;

    fn encode_command(command: &u64) -> Vec<u8> {
        command.to_le_bytes().to_vec()
    }

    fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| DecodeError::new("a command is 8 bytes"))?;
        Ok(u64::from_le_bytes(bytes))
    }

    fn apply(&mut self, command: u64) -> usize {
        self.applied.push(command);
        self.mirror.lock().unwrap().push(command);
        self.applied.len()
    }

    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        Ok(self
            .applied
            .iter()
            .flat_map(|command| command.to_le_bytes())
            .collect())
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        self.applied = bytes
            .chunks_exact(8)
            .map(|chunk| u64::from_le_bytes(chunk.try_into().unwrap()))
            .collect();
        self.publish();
    }
}

/// Nodes, their storage (kept across restarts) and the network between them.
pub struct Cluster {
    pub network: LocalNetwork,
    pub nodes: BTreeMap<NodeId, Node<Recorder>>,
    pub storage: BTreeMap<NodeId, MemStorage>,
    /// What each node's state machine has applied, as of now.
    pub mirrors: BTreeMap<NodeId, Arc<Mutex<Vec<u64>>>>,
    pub configure: fn(&mut Config),
}

/// Fast ticks for tests: 10 ms.
pub fn test_config(me: NodeId, peers: impl IntoIterator<Item = NodeId>) -> Config {
    let mut config = Config::new(me, peers);
    config.tick_interval = Duration::from_millis(10);
    config.random_seed = Some(me.get() * 7919);
    config
}

/// The configuration of node 1 founding a one-node cluster, adjusted by `configure`.
pub fn lone_config(configure: impl FnOnce(&mut Config)) -> Config {
    let mut config = test_config(id(1), []);
    config.bootstrap = Bootstrap::NewCluster {
        members: [id(1)].into_iter().collect(),
    };
    configure(&mut config);
    config
}

/// Starts node 1 as a one-node cluster (see [`lone_config`]) on `network` and waits until it
/// has elected itself.
pub async fn lone_leader<S: StateMachine, St: yggr::Storage>(
    network: &LocalNetwork,
    state: S,
    storage: St,
    configure: impl FnOnce(&mut Config),
) -> Node<S> {
    let node = Node::start(
        lone_config(configure),
        state,
        storage,
        network.transport(id(1)),
    )
    .await
    .expect("a one-node cluster starts");
    eventually(Duration::from_secs(10), || async {
        (node.current_leader() == Some(node.id())).then_some(())
    })
    .await
    .expect("a lone node elects itself");
    node
}

impl Cluster {
    /// `size` founding nodes, ids 1..=size, each configured by `configure` after the test
    /// defaults.
    pub async fn start(size: u64, configure: fn(&mut Config)) -> Cluster {
        let mut cluster = Cluster {
            network: LocalNetwork::new(),
            nodes: BTreeMap::new(),
            storage: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            configure,
        };
        cluster.network.set_seed(size);
        let ids: Vec<NodeId> = (1..=size).map(id).collect();
        for me in &ids {
            let peers = ids.iter().copied().filter(|other| other != me);
            let mut config = test_config(*me, peers);
            // `Config::new` with no peers means Recover; a one-node cluster founds itself.
            config.bootstrap = Bootstrap::NewCluster {
                members: ids.iter().copied().collect(),
            };
            configure(&mut config);
            cluster.launch(config).await;
        }
        cluster
    }

    /// Starts a node with `config` over its storage (created on first use).
    pub async fn launch(&mut self, config: Config) -> Node<Recorder> {
        let me = config.node_id;
        let storage = self.storage.entry(me).or_default().clone();
        let recorder = Recorder::default();
        self.mirrors.insert(me, Arc::clone(&recorder.mirror));
        let node = Node::start(config, recorder, storage, self.network.transport(me))
            .await
            .expect("the node starts");
        self.nodes.insert(me, node.clone());
        node
    }

    /// Starts a node that will join the running cluster.
    pub async fn join(&mut self, me: NodeId) -> Node<Recorder> {
        let mut config = test_config(me, []);
        (self.configure)(&mut config);
        config.bootstrap = Bootstrap::Join;
        self.launch(config).await
    }

    /// Shuts `me` down and starts it again from its storage.
    pub async fn restart(&mut self, me: NodeId) -> Node<Recorder> {
        if let Some(node) = self.nodes.remove(&me) {
            node.shutdown().await.expect("a clean shutdown");
        }
        let mut config = test_config(me, []);
        (self.configure)(&mut config);
        config.bootstrap = Bootstrap::Recover;
        self.launch(config).await
    }

    pub fn node(&self, me: NodeId) -> Node<Recorder> {
        self.nodes[&me].clone()
    }

    /// Waits (in virtual time) until one node leads and every other running node agrees.
    pub async fn leader(&self) -> Node<Recorder> {
        eventually(Duration::from_secs(30), || async {
            let leaders: Vec<&Node<Recorder>> = self
                .nodes
                .values()
                .filter(|node| node.current_leader() == Some(node.id()))
                .collect();
            let [leader] = leaders[..] else { return None };
            let agreed = self
                .nodes
                .values()
                .all(|node| node.current_leader() == Some(leader.id()));
            agreed.then(|| leader.clone())
        })
        .await
        .expect("a leader every node agrees on")
    }

    /// Writes `command` through whichever node leads, retrying through elections.
    pub async fn write(&self, command: u64) -> usize {
        eventually(Duration::from_secs(30), || async {
            let leader = self
                .nodes
                .values()
                .find(|node| node.current_leader() == Some(node.id()))?;
            leader.write(command).await.ok()
        })
        .await
        .expect("the write eventually succeeds")
    }

    /// What `me` has applied so far.
    pub fn applied(&self, me: NodeId) -> Vec<u64> {
        self.mirrors[&me].lock().unwrap().clone()
    }

    /// Waits until every running node has applied the same commands, and those include
    /// every one of `required`. Returns the common record.
    pub async fn converged(&self, required: &[u64]) -> Vec<u64> {
        eventually(Duration::from_secs(60), || async {
            let records: Vec<Vec<u64>> = self.nodes.keys().map(|me| self.applied(*me)).collect();
            let first = records.first()?.clone();
            let same = records.iter().all(|record| *record == first);
            let complete = required.iter().all(|command| first.contains(command));
            (same && complete).then_some(first)
        })
        .await
        .unwrap_or_else(|| {
            let records: BTreeMap<NodeId, usize> = self
                .nodes
                .keys()
                .map(|me| (*me, self.applied(*me).len()))
                .collect();
            panic!("the nodes did not converge: applied counts {records:?}")
        })
    }

    pub async fn shutdown(self) {
        for node in self.nodes.into_values() {
            let _ = node.shutdown().await;
        }
    }
}

/// Waits (up to 30 s, polling) until one of `nodes` believes it leads, and returns it.
pub async fn leader_among<'a, S: StateMachine>(
    nodes: impl IntoIterator<Item = &'a Node<S>> + Clone,
) -> Node<S> {
    eventually(Duration::from_secs(30), || {
        let nodes = nodes.clone();
        async move {
            nodes
                .into_iter()
                .find(|node| node.current_leader() == Some(node.id()))
                .cloned()
        }
    })
    .await
    .expect("one of the nodes leads")
}

/// Polls `check` every 10 ms of virtual time until it returns `Some`, or `limit` passes.
pub async fn eventually<T, F, Fut>(limit: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Storage that counts `persist` calls and the entries they carry.
#[derive(Clone, Debug, Default)]
pub struct CountingStorage {
    pub inner: MemStorage,
    pub persists: Arc<std::sync::atomic::AtomicU64>,
    pub entries: Arc<std::sync::atomic::AtomicU64>,
}

impl yggr::Storage for CountingStorage {
    type Error = std::convert::Infallible;

    async fn load(&mut self) -> Result<Option<yggr::StoredState>, Self::Error> {
        self.inner.load().await
    }

    async fn bootstrap(
        &mut self,
        node_id: yggr::NodeId,
        founding: &yggr::Membership,
    ) -> Result<(), Self::Error> {
        self.inner.bootstrap(node_id, founding).await
    }

    async fn persist(&mut self, writes: Vec<yggr::StorageWrite>) -> Result<(), Self::Error> {
        use std::sync::atomic::Ordering;
        self.persists.fetch_add(1, Ordering::Relaxed);
        for write in &writes {
            if let yggr::StorageWrite::Entries(entries) = write {
                self.entries
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
            }
        }
        self.inner.persist(writes).await
    }
}

/// A transport that counts the AppendEntries it sends.
#[derive(Debug)]
pub struct CountingTransport {
    pub inner: yggr::LocalTransport,
    pub appends: Arc<std::sync::atomic::AtomicU64>,
}

impl yggr::Transport for CountingTransport {
    fn send(&mut self, to: NodeId, message: yggr::core::Message<yggr::core::Bytes>) {
        if matches!(message.rpc, yggr::core::Rpc::AppendEntries(_)) {
            self.appends
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.inner.send(to, message);
    }

    async fn recv(&mut self) -> Option<yggr::core::Message<yggr::core::Bytes>> {
        self.inner.recv().await
    }

    fn try_recv(&mut self) -> Option<yggr::core::Message<yggr::core::Bytes>> {
        self.inner.try_recv()
    }
}

/// Starts a single-node cluster over counting storage and transport; returns the node (the
/// leader once it elected itself) and the counters.
pub async fn counted_single_node(
    configure: fn(&mut Config),
) -> (
    Node<Recorder>,
    CountingStorage,
    Arc<std::sync::atomic::AtomicU64>,
) {
    let network = LocalNetwork::new();
    let storage = CountingStorage::default();
    let appends = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let transport = CountingTransport {
        inner: network.transport(id(1)),
        appends: Arc::clone(&appends),
    };
    let mut config = test_config(id(1), []);
    config.bootstrap = Bootstrap::NewCluster {
        members: [id(1)].into_iter().collect(),
    };
    configure(&mut config);
    let node = Node::start(config, Recorder::default(), storage.clone(), transport)
        .await
        .expect("the node starts");
    eventually(Duration::from_secs(10), || async {
        (node.current_leader() == Some(node.id())).then_some(())
    })
    .await
    .expect("a lone node elects itself");
    (node, storage, appends)
}

/// The counters of one node of a counted cluster.
#[derive(Clone, Debug)]
pub struct Counters {
    pub storage: CountingStorage,
    pub appends: Arc<std::sync::atomic::AtomicU64>,
}

impl Cluster {
    /// Like [`Cluster::start`], with every node's storage and transport counted.
    pub async fn start_counted(
        size: u64,
        configure: fn(&mut Config),
    ) -> (Cluster, BTreeMap<NodeId, Counters>) {
        let mut cluster = Cluster {
            network: LocalNetwork::new(),
            nodes: BTreeMap::new(),
            storage: BTreeMap::new(),
            mirrors: BTreeMap::new(),
            configure,
        };
        let mut counters = BTreeMap::new();
        let ids: Vec<NodeId> = (1..=size).map(id).collect();
        for me in &ids {
            let mut config = test_config(*me, ids.iter().copied().filter(|other| other != me));
            configure(&mut config);
            let storage = CountingStorage::default();
            let appends = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let transport = CountingTransport {
                inner: cluster.network.transport(*me),
                appends: Arc::clone(&appends),
            };
            let recorder = Recorder::default();
            cluster.mirrors.insert(*me, Arc::clone(&recorder.mirror));
            let node = Node::start(config, recorder, storage.clone(), transport)
                .await
                .expect("the node starts");
            cluster.nodes.insert(*me, node);
            counters.insert(*me, Counters { storage, appends });
        }
        (cluster, counters)
    }
}
