//! What one stack run does, all of it derived from a seed.

use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// How often the fault injector acts, and what it may do. Times are simulated.
#[derive(Clone, Debug, PartialEq)]
pub struct Faults {
    /// The mean pause between two fault actions.
    pub mean_interval: Duration,
    /// Crash a node (unsynced writes lost) and restart it later.
    pub crashes: bool,
    /// Cut the cluster in two, both ways.
    pub partitions: bool,
    /// Cut one direction between two nodes.
    pub one_way_cuts: bool,
    /// Hold every message to and from a node, then deliver them all at once, as after a
    /// process or VM pause.
    pub holds: bool,
    /// Raise one link's latency.
    pub slow_links: bool,
    /// Pause a node's process (SIGSTOP, a VM pause) and resume it later: its clock runs on,
    /// its sockets fill.
    pub pauses: bool,
    /// Fill a node's disk for a while: writes fail, the node stops and must not acknowledge
    /// anything it could not persist.
    pub full_disks: bool,
    /// Make a node's disk slow for a while.
    pub slow_disks: bool,
    /// Make a node's state machine slow for a while.
    pub slow_state_machines: bool,
    /// Corrupt a crashed node's files before it restarts (it must refuse to start, and is
    /// then lost for the run). At most a minority of the voters is ever lost or down.
    pub corruption: bool,
    /// Transfer leadership now and then.
    pub transfers: bool,
    /// Take voters out and bring them back (as learners, then promoted); on three nodes,
    /// sometimes down to a lone voter.
    pub membership_changes: bool,
    /// The probability that an fsync fails, on every node, during the faults phase (the
    /// node stops; see `yggr::simulation::SimulatedHost::set_fsync_failure_probability`).
    pub fsync_failure_probability: f64,
    /// The probability that a simulated file operation fails with an I/O error (the node
    /// stops, never acknowledging what it could not persist, and is restarted).
    pub io_error_probability: f64,
    /// The probability that the simulated disk persists a pending write early, without an
    /// fsync (as a real kernel may).
    pub early_sync_probability: f64,
}

impl Faults {
    /// No faults at all.
    pub fn none() -> Faults {
        Faults {
            mean_interval: Duration::from_millis(400),
            crashes: false,
            partitions: false,
            one_way_cuts: false,
            holds: false,
            slow_links: false,
            pauses: false,
            full_disks: false,
            slow_disks: false,
            slow_state_machines: false,
            corruption: false,
            transfers: false,
            membership_changes: false,
            fsync_failure_probability: 0.0,
            io_error_probability: 0.0,
            early_sync_probability: 0.0,
        }
    }

    /// Every fault: network, process and disk, early syncs, rare failed fsyncs; no random
    /// read or write errors (see `io_error_probability`).
    pub fn chaos() -> Faults {
        Faults {
            crashes: true,
            partitions: true,
            one_way_cuts: true,
            holds: true,
            slow_links: true,
            pauses: true,
            full_disks: true,
            slow_disks: true,
            slow_state_machines: true,
            corruption: true,
            transfers: true,
            membership_changes: true,
            fsync_failure_probability: 0.004,
            early_sync_probability: 0.05,
            ..Faults::none()
        }
    }
}

/// One run of the stack simulation.
#[derive(Clone, Debug, PartialEq)]
pub struct StackOptions {
    /// Everything random in the run comes from it.
    pub seed: u64,
    /// Voters the cluster is founded with (3 or 5 are the usual).
    pub nodes: u64,
    /// Clients sending commands at once, each one at a time.
    pub clients: u32,
    /// How long the faults phase lasts, in simulated time.
    pub chaos_duration: Duration,
    /// How long the healed cluster may take to elect a leader, answer every request and bring
    /// every replica to the same state, in simulated time.
    pub liveness_limit: Duration,
    /// The nodes' tick.
    pub tick_interval: Duration,
    /// `Config::snapshot_hint_threshold_entries` for every node: small, so runs take and
    /// send snapshots.
    pub snapshot_every_entries: u64,
    /// `Config::lease_duration_ticks` for every node: 0 (no leases; every read takes a
    /// round) or a lease within what the election timeouts allow.
    pub lease_duration_ticks: u64,
    /// `Config::max_pending_applies` for every node. Small, a slow state machine fills the
    /// apply backlog: a leader then sets writes aside, and a follower must still redirect at
    /// once.
    pub max_pending_applies: usize,
    /// The longest pause a client takes between two requests.
    pub client_think_time: Duration,
    /// What the fault injector does.
    pub faults: Faults,
    /// Whether the converged cluster then runs the steady phase: a slow follower's state
    /// machine, then a slow leader's disk, with clients writing; it must answer redirects at
    /// once and change no term.
    pub steady_phase: bool,
    /// `DiskStorage::with_segment_bytes` for every node. Small, every batch or few starts a
    /// log segment: runs then cross segment rolls, and compactions and installs that remove
    /// many segments, all the time.
    pub segment_bytes: u64,
    /// The wall time after which a run is given up as failed: a run that spins (a livelock,
    /// work that never lets simulated time pass) ends with a failure that says so instead
    /// of running on for minutes. The default, two minutes, is hundreds of times what a
    /// correct run takes; raise it for a state machine that does heavy real work.
    pub wall_time_limit: Duration,
}

impl StackOptions {
    /// A run of `nodes` voters with every fault, seeded by `seed`: 3 clients, 10 s of faults.
    pub fn new(seed: u64, nodes: u64) -> StackOptions {
        StackOptions {
            seed,
            nodes,
            clients: 3,
            chaos_duration: Duration::from_secs(10),
            liveness_limit: Duration::from_secs(30),
            tick_interval: Duration::from_millis(10),
            snapshot_every_entries: 64,
            lease_duration_ticks: 0,
            max_pending_applies: 4096,
            client_think_time: Duration::from_millis(20),
            faults: Faults::chaos(),
            steady_phase: true,
            segment_bytes: yggr::storage::disk::DEFAULT_SEGMENT_BYTES,
            wall_time_limit: Duration::from_secs(120),
        }
    }

    /// Options drawn from `seed`: 3 or 5 nodes, 2 to 5 clients, a snapshot threshold from 16
    /// to 256 entries, leases in half the runs, a tiny apply channel in a third, log segments
    /// of a batch or a few in half, with every fault.
    pub fn from_seed(seed: u64) -> StackOptions {
        let mut draw = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_0f57);
        let mut options = StackOptions::new(seed, if draw.random_bool(0.7) { 3 } else { 5 });
        options.clients = draw.random_range(2..=5);
        options.snapshot_every_entries = 16 << draw.random_range(0..5);
        // The default timeouts (10 to 20 ticks, heartbeats every 3) allow leases below 7.
        options.lease_duration_ticks = if draw.random_bool(0.5) { 5 } else { 0 };
        // In a third of the runs, an apply backlog of 64 jobs is full.
        if draw.random_bool(1.0 / 3.0) {
            options.max_pending_applies = 1;
        }
        // In half the runs, segments of one batch (a limit of 1 byte) or of a few.
        if draw.random_bool(0.5) {
            options.segment_bytes = if draw.random_bool(0.5) { 1 } else { 1024 };
        }
        options
    }
}
