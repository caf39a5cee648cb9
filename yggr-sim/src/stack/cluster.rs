//! The nodes: each a turmoil host running the real `Node` over the real `DiskStorage` (on the
//! host's simulated file system) and the real `TcpTransport` (on the simulated network), and
//! the registry through which clients and the fault injector find them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use yggr::{Bootstrap, Config, DiskStorage, Node, NodeId, TcpOptions, TcpTransport};

use super::observed::{Journal, Observed};
use super::options::StackOptions;
use super::workload::Workload;

/// The port every node listens on, on its own host.
pub(crate) const RAFT_PORT: u16 = 7000;

/// Where every node keeps its data, on its own host's file system.
pub(crate) const DATA_DIRECTORY: &str = "/yggr/data";

/// The turmoil host name of `node`.
pub(crate) fn host_name(node: NodeId) -> String {
    format!("node-{node}")
}

/// What the simulation knows about one node's process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Process {
    /// Starting, or never started.
    Starting,
    /// Running; `Node` handles can be had from the registry.
    Up,
    /// Crashed by the fault injector; its unsynced writes are gone.
    Crashed,
    /// It stopped by itself: it refused to start on its disk, or a fatal error (a failed
    /// fsync, say) stopped it. The reason is kept for the report.
    Stopped(String),
}

/// One node's entry in the registry.
pub(crate) struct Slot<W: Workload> {
    pub(crate) process: Process,
    /// Starts so far, the current one included.
    pub(crate) life: u32,
    pub(crate) node: Option<Node<Observed<W>>>,
}

/// Every node, by id. Shared (single-threaded) by the node hosts, the clients and the runner.
pub(crate) struct Registry<W: Workload> {
    pub(crate) slots: RefCell<BTreeMap<NodeId, Slot<W>>>,
}

impl<W: Workload> Registry<W> {
    pub(crate) fn new(members: &[NodeId]) -> Registry<W> {
        let slots = members
            .iter()
            .map(|&id| {
                let slot = Slot {
                    process: Process::Starting,
                    life: 0,
                    node: None,
                };
                (id, slot)
            })
            .collect();
        Registry {
            slots: RefCell::new(slots),
        }
    }

    /// The node's handle while it is up, with the life it belongs to.
    pub(crate) fn node(&self, id: NodeId) -> Option<(Node<Observed<W>>, u32)> {
        let slots = self.slots.borrow();
        let slot = slots.get(&id)?;
        match (&slot.process, &slot.node) {
            (Process::Up, Some(node)) => Some((node.clone(), slot.life)),
            _ => None,
        }
    }

    /// The ids of the nodes that are up.
    pub(crate) fn up(&self) -> Vec<NodeId> {
        self.slots
            .borrow()
            .iter()
            .filter(|(_, slot)| slot.process == Process::Up)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The life `id` is in now.
    pub(crate) fn life(&self, id: NodeId) -> u32 {
        self.slots.borrow().get(&id).map_or(0, |slot| slot.life)
    }

    pub(crate) fn process(&self, id: NodeId) -> Process {
        self.slots
            .borrow()
            .get(&id)
            .map_or(Process::Starting, |slot| slot.process.clone())
    }

    fn begin_life(&self, id: NodeId) -> u32 {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        slot.life += 1;
        slot.process = Process::Starting;
        slot.node = None;
        slot.life
    }

    fn set_up(&self, id: NodeId, node: Node<Observed<W>>) {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        slot.process = Process::Up;
        slot.node = Some(node);
    }

    fn set_stopped(&self, id: NodeId, reason: String) {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        slot.process = Process::Stopped(reason);
        slot.node = None;
    }

    /// Records that the fault injector crashed `id`.
    pub(crate) fn set_crashed(&self, id: NodeId) {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        slot.process = Process::Crashed;
        slot.node = None;
    }
}

/// Everything a node host needs to start its node, again after every restart.
pub(crate) struct NodeHost<W: Workload> {
    pub(crate) id: NodeId,
    pub(crate) members: Vec<NodeId>,
    pub(crate) workload: W,
    pub(crate) registry: Rc<Registry<W>>,
    pub(crate) journal: Journal,
    pub(crate) options: StackOptions,
}

/// The configuration every node runs with: short ticks so that a simulated second holds many
/// elections' worth of time, and frequent snapshots so that runs cross them.
pub(crate) fn node_config(
    options: &StackOptions,
    id: NodeId,
    members: &[NodeId],
    life: u32,
) -> Config {
    let mut config = Config::new(id, members.iter().copied().filter(|&peer| peer != id));
    config.bootstrap = Bootstrap::NewCluster {
        members: members.iter().copied().collect(),
    };
    config.tick_interval = options.tick_interval;
    config.snapshot_hint_threshold_entries = options.snapshot_every_entries;
    config.random_seed = Some(
        options
            .seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(u64::from(life) << 32 | id.get()),
    );
    config
}

/// The transport's timings, scaled to the simulation's ticks.
fn tcp_options() -> TcpOptions {
    let mut options = TcpOptions::default();
    options.io_timeout = Duration::from_secs(1);
    options.handshake_timeout = Duration::from_secs(1);
    options.idle_timeout = Duration::from_secs(3);
    options.reconnect_backoff_min = Duration::from_millis(20);
    options.reconnect_backoff_max = Duration::from_millis(500);
    options
}

impl<W: Workload> NodeHost<W> {
    /// The host's software: start the node, then watch it until it stops by itself.
    pub(crate) async fn run(&self) -> turmoil::Result {
        let id = self.id;
        let life = self.registry.begin_life(id);
        let storage = match DiskStorage::open(DATA_DIRECTORY).await {
            Ok(storage) => storage,
            Err(error) => {
                self.registry
                    .set_stopped(id, format!("refused to open its disk: {error}"));
                return Ok(());
            }
        };
        let peers: Vec<(NodeId, SocketAddr)> = self
            .members
            .iter()
            .map(|&peer| {
                (
                    peer,
                    SocketAddr::new(turmoil::lookup(host_name(peer)), RAFT_PORT),
                )
            })
            .collect();
        let listen = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), RAFT_PORT);
        let transport = TcpTransport::start_with(id, listen, peers, tcp_options()).await?;
        let config = node_config(&self.options, id, &self.members, life);
        let state = Observed::new(self.workload.clone(), id, life, self.journal.clone());
        let node = match Node::start(config, state, storage, transport).await {
            Ok(node) => node,
            Err(error) => {
                self.registry
                    .set_stopped(id, format!("refused to start: {error}"));
                return Ok(());
            }
        };
        self.registry.set_up(id, node.clone());
        // A node stops by itself only after a fatal error (a failed fsync, say): then the
        // process ends, as a real one would, and the fault injector restarts it later.
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if let Err(error) = node.status().await {
                self.registry.set_stopped(id, format!("stopped: {error}"));
                return Ok(());
            }
        }
    }
}
