//! The nodes: each a turmoil host running the real `Node` over the real `DiskStorage` (on the
//! host's simulated file system) and the real `TcpTransport` (on the simulated network), and
//! the registry through which clients and the fault injector find them.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use yggr::simulation::SimulatedHost;
use yggr::{Bootstrap, Config, DiskStorage, Node, NodeId, TcpOptions, TcpTransport};

use super::observed::{Journal, Observed};
use super::options::StackOptions;
use super::stored::{Recorded, StoredLogs};
use super::workload::{Draw, Workload};
use turmoil::fs::shim::std::fs as simulated_fs;

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
    /// It stopped by itself: a fatal error (a failed fsync, a full disk) stopped it, or it
    /// could not start. The reason is kept for the report.
    Stopped(String),
    /// It refused to start on a disk the simulation corrupted, as it must: the node is lost
    /// for the rest of the run.
    Lost(String),
}

/// A corruption the simulation writes into a stopped node's files before it starts again.
/// Each is one that `DiskStorage` must refuse, never repair in silence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Corruption {
    /// One bit flipped in a byte that holds data, in any file.
    FlippedBit,
    /// A whole log segment (one that holds a batch) overwritten with zeros.
    ZeroedSegment,
    /// One bit flipped in the last batch of the last log segment.
    FlippedBitInLastBatch,
}

/// One node's entry in the registry.
pub(crate) struct Slot<W: Workload> {
    pub(crate) process: Process,
    /// Starts so far, the current one included.
    pub(crate) life: u32,
    pub(crate) node: Option<Node<Observed<W>>>,
    /// The process, for the faults set on it (pause, disk).
    pub(crate) host: SimulatedHost,
    /// Simulated time each apply takes on this node now (a slow state machine).
    pub(crate) apply_cost: Arc<AtomicU64>,
    /// Zero bytes this node adds to every snapshot it takes now.
    pub(crate) snapshot_ballast: Arc<AtomicU64>,
    /// A corruption to write before the next start.
    pub(crate) corrupt_before_start: Option<Corruption>,
    /// The corruption written before the current start, if any.
    pub(crate) corrupted: Option<Corruption>,
    /// Whether the disk is full now (set by the fault injector).
    pub(crate) disk_full: bool,
    /// Pauses and resumptions of the process so far: a request whose answer spans one was
    /// held up by the pause, not by the node.
    pub(crate) pause_events: u32,
    /// A power loss to arm when the next start begins: within this many storage operations.
    pub(crate) power_loss_on_start: Option<u32>,
}

/// Every node, by id. Shared (single-threaded) by the node hosts, the clients and the runner.
pub(crate) struct Registry<W: Workload> {
    pub(crate) slots: RefCell<BTreeMap<NodeId, Slot<W>>>,
    /// What storage did that it must not: started on a corrupted disk, or refused a disk no
    /// fault explains. Checked after the run.
    pub(crate) storage_violations: RefCell<Vec<String>>,
    /// What every node's storage loaded and stored, held to Log Matching.
    pub(crate) stored: Arc<Mutex<StoredLogs>>,
}

impl<W: Workload> Registry<W> {
    pub(crate) fn new(members: &[NodeId], seed: u64) -> Registry<W> {
        let slots = members
            .iter()
            .map(|&id| {
                let slot = Slot {
                    process: Process::Starting,
                    life: 0,
                    node: None,
                    host: SimulatedHost::new(),
                    apply_cost: Arc::new(AtomicU64::new(0)),
                    snapshot_ballast: Arc::new(AtomicU64::new(0)),
                    corrupt_before_start: None,
                    corrupted: None,
                    disk_full: false,
                    pause_events: 0,
                    power_loss_on_start: None,
                };
                (id, slot)
            })
            .collect();
        Registry {
            slots: RefCell::new(slots),
            storage_violations: RefCell::new(Vec::new()),
            stored: Arc::new(Mutex::new(StoredLogs::new(seed))),
        }
    }

    /// The node's handle while it is up, with the life it belongs to.
    pub(crate) fn node(&self, id: NodeId) -> Option<(Node<Observed<W>>, u32)> {
        let slots = self.slots.borrow();
        let slot = slots.get(&id)?;
        match (&slot.process, &slot.node) {
            (Process::Up, Some(node)) if !slot.host.is_paused() => Some((node.clone(), slot.life)),
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

    /// Pauses and resumptions of `id`'s process so far.
    pub(crate) fn pause_events(&self, id: NodeId) -> u32 {
        self.slots
            .borrow()
            .get(&id)
            .map_or(0, |slot| slot.pause_events)
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

    /// Begins a start of `id`: its life number, and the corruption to write first.
    fn begin_life(&self, id: NodeId) -> (u32, Option<Corruption>) {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        slot.life += 1;
        slot.process = Process::Starting;
        slot.node = None;
        slot.corrupted = slot.corrupt_before_start.take();
        slot.host.restarted();
        if let Some(operations) = slot.power_loss_on_start.take() {
            slot.host.lose_power_after(operations);
        }
        (slot.life, slot.corrupted)
    }

    /// What every node's storage loaded and stored.
    pub(crate) fn stored_logs(&self) -> std::sync::MutexGuard<'_, StoredLogs> {
        self.stored
            .lock()
            .expect("the stored logs' lock is never poisoned")
    }

    /// Runs `software` as `id`'s process.
    pub(crate) fn host(&self, id: NodeId) -> SimulatedHost {
        self.slots.borrow()[&id].host.clone()
    }

    /// `id`'s apply cost, shared with its state machine.
    pub(crate) fn apply_cost(&self, id: NodeId) -> Arc<AtomicU64> {
        self.slots.borrow()[&id].apply_cost.clone()
    }

    /// `id`'s snapshot ballast, shared with its state machine.
    pub(crate) fn snapshot_ballast(&self, id: NodeId) -> Arc<AtomicU64> {
        self.slots.borrow()[&id].snapshot_ballast.clone()
    }

    /// Calls `change` on `id`'s slot.
    pub(crate) fn with_slot<R>(&self, id: NodeId, change: impl FnOnce(&mut Slot<W>) -> R) -> R {
        change(
            self.slots
                .borrow_mut()
                .get_mut(&id)
                .expect("every node host has a slot"),
        )
    }

    fn set_up(&self, id: NodeId, node: Node<Observed<W>>) {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        if let Some(corruption) = slot.corrupted {
            self.storage_violations.borrow_mut().push(format!(
                "node {id} started (start {}) on a disk with {corruption:?} written into it",
                slot.life
            ));
        }
        slot.process = Process::Up;
        slot.node = Some(node);
    }

    fn set_stopped(&self, id: NodeId, reason: String) {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        slot.process = Process::Stopped(reason);
        slot.node = None;
    }

    /// A start refused: the node is lost if its disk was corrupted on purpose; otherwise it
    /// only stopped (and a refusal nothing explains fails the run, see `unexplained_refusals`).
    fn set_refused(&self, id: NodeId, reason: String) {
        let mut slots = self.slots.borrow_mut();
        let slot = slots.get_mut(&id).expect("every node host has a slot");
        slot.node = None;
        // An injected disk fault says "(simulated)" in its error, and explains the refusal.
        let injected = reason.contains("(simulated)");
        if slot.corrupted.is_none() && !slot.disk_full && !injected {
            self.storage_violations.borrow_mut().push(format!(
                "node {id} refused (start {}) a disk nothing corrupted: {reason}",
                slot.life
            ));
        }
        slot.process = match slot.corrupted {
            Some(corruption) => Process::Lost(format!("{reason} (after {corruption:?})")),
            None => Process::Stopped(reason),
        };
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
    config.lease_duration_ticks = options.lease_duration_ticks;
    config.max_pending_applies = options.max_pending_applies;
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
    /// The host's software, as the node's process (so that its faults apply to it).
    pub(crate) async fn run(self: Rc<Self>) -> turmoil::Result {
        let host = self.registry.host(self.id);
        host.run(self.start_and_watch()).await
    }

    /// Starts the node, then watches it until it stops by itself.
    async fn start_and_watch(self: Rc<Self>) -> turmoil::Result {
        let id = self.id;
        let (life, corruption) = self.registry.begin_life(id);
        if let Some(corruption) = corruption
            && let Err(error) = corrupt(
                corruption,
                self.options.seed ^ u64::from(life),
                DATA_DIRECTORY,
            )
        {
            // Nothing to corrupt (the node never wrote a batch, say): it starts normally.
            self.registry.with_slot(id, |slot| slot.corrupted = None);
            let _ = error;
        }
        let storage = match DiskStorage::open(DATA_DIRECTORY).await {
            Ok(storage) => Recorded::new(
                storage.with_segment_bytes(self.options.segment_bytes),
                id,
                life,
                self.registry.host(id),
                self.registry.stored.clone(),
            ),
            Err(error) => {
                self.registry
                    .set_refused(id, format!("refused to open its disk: {error}"));
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
        let state = Observed::new(
            self.workload.clone(),
            id,
            life,
            self.journal.clone(),
            self.registry.apply_cost(id),
            self.registry.snapshot_ballast(id),
        );
        let node = match Node::start(config, state, storage, transport).await {
            Ok(node) => node,
            Err(error) => {
                self.registry
                    .set_refused(id, format!("refused to start: {error}"));
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

/// Every file under `directory`, in name order.
fn files_under(directory: &Path) -> Vec<PathBuf> {
    let Ok(entries) = simulated_fs::read_dir(directory) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .collect();
    paths.sort();
    let mut files = Vec::new();
    for path in paths {
        if simulated_fs::metadata(&path).is_ok_and(|metadata| metadata.is_dir()) {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// Writes `corruption` into the storage directory `directory` on this host, durably.
pub(crate) fn corrupt(corruption: Corruption, seed: u64, directory: &str) -> std::io::Result<()> {
    // The files storage reads at every start; not leftovers it only removes (retired
    // segments, temporary files).
    let files: Vec<PathBuf> = files_under(Path::new(directory))
        .into_iter()
        .filter(|path| {
            let name = path
                .file_name()
                .and_then(|name| name.to_str())
                .unwrap_or("");
            matches!(name, "meta" | "hard_state" | "snapshot") || name.ends_with(".seg")
        })
        .collect();
    let segments: Vec<&PathBuf> = files
        .iter()
        .filter(|path| path.extension().is_some_and(|extension| extension == "seg"))
        .collect();
    let mut draw = Draw::new(seed);
    let nothing = || std::io::Error::other("nothing to corrupt");
    let (path, mut bytes) = match corruption {
        Corruption::FlippedBit => {
            let path = files
                .get(draw.below(files.len() as u64) as usize)
                .ok_or_else(nothing)?;
            (path.clone(), simulated_fs::read(path)?)
        }
        Corruption::ZeroedSegment | Corruption::FlippedBitInLastBatch => {
            let path = match corruption {
                Corruption::ZeroedSegment => {
                    segments.get(draw.below(segments.len() as u64) as usize)
                }
                _ => segments.last(),
            }
            .ok_or_else(nothing)?;
            (path.to_path_buf(), simulated_fs::read(path)?)
        }
    };
    // A segment with no batch yet is what an interrupted creation leaves: not corruption.
    if corruption != Corruption::FlippedBit
        && bytes.len() <= SEGMENT_HEADER_BYTES + BATCH_HEADER_BYTES
    {
        return Err(nothing());
    }
    match corruption {
        Corruption::ZeroedSegment => bytes.iter_mut().for_each(|byte| *byte = 0),
        Corruption::FlippedBit | Corruption::FlippedBitInLastBatch => {
            // A byte that holds data, changed so that it still does: flipping the top bit of a
            // non-zero byte other than 0x80 never makes a sector read as zeros, which a
            // torn write could leave.
            let candidates: Vec<usize> = (0..bytes.len())
                .filter(|&at| bytes[at] != 0 && bytes[at] != 0x80)
                .collect();
            let in_last_segment = segments.last().is_some_and(|last| **last == path);
            let candidates = match corruption {
                Corruption::FlippedBitInLastBatch => last_batch(&bytes, &candidates),
                // Anywhere but in an ambiguous last batch (see `last_batch`).
                Corruption::FlippedBit if in_last_segment => {
                    let safe = last_batch(&bytes, &candidates);
                    let start = safe.first().copied().unwrap_or(usize::MAX);
                    let before_last = bytes
                        .windows(BATCH_MAGIC.len())
                        .rposition(|window| window == BATCH_MAGIC)
                        .unwrap_or(0);
                    candidates
                        .into_iter()
                        .filter(|&at| at < before_last || at >= start)
                        .collect()
                }
                _ => candidates,
            };
            let at = *candidates
                .get(draw.below(candidates.len() as u64) as usize)
                .ok_or_else(nothing)?;
            bytes[at] ^= 0x80;
        }
    }
    let file = simulated_fs::OpenOptions::new().write(true).open(&path)?;
    std::os::unix::fs::FileExt::write_all_at(&file, &bytes, 0)?;
    file.sync_all()
}

/// The candidates inside the last batch of a segment (after its last batch magic), if no
/// sector chunk of that batch reads all zeros. A changed byte in a batch that has such a chunk
/// is exactly what a torn append leaves (the chunk's sector never reached the disk), which
/// storage rightly cuts: no candidate there.
fn last_batch(bytes: &[u8], candidates: &[usize]) -> Vec<usize> {
    let Some(start) = bytes
        .windows(BATCH_MAGIC.len())
        .rposition(|window| window == BATCH_MAGIC)
    else {
        return Vec::new();
    };
    if has_zero_sector_chunk(&bytes[start..], start) {
        return Vec::new();
    }
    candidates
        .iter()
        .copied()
        .filter(|&at| at >= start)
        .collect()
}

/// Whether `batch`, found at `offset` in its file, holds a chunk (its bytes cut at every
/// multiple of the sector size in the file) that reads all zeros.
fn has_zero_sector_chunk(batch: &[u8], offset: usize) -> bool {
    let mut start = 0;
    while start < batch.len() {
        let end = ((offset + start) / SECTOR_BYTES + 1) * SECTOR_BYTES - offset;
        let end = end.min(batch.len());
        if batch[start..end].iter().all(|byte| *byte == 0) {
            return true;
        }
        start = end;
    }
    false
}

/// The sector size storage assumes a disk writes whole or not at all.
const SECTOR_BYTES: usize = 512;
/// A log segment's header.
const SEGMENT_HEADER_BYTES: usize = 32;
/// A batch's header.
const BATCH_HEADER_BYTES: usize = 16;
/// What a batch starts with.
const BATCH_MAGIC: &[u8] = b"YBAT";
