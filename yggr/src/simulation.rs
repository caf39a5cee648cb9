//! What a simulator sets up to run yggr inside a turmoil simulation, and the faults it can
//! set on a simulated host.
//!
//! Inside a simulation (`turmoil::in_simulation()`), the runtime's files, sockets, blocking
//! work and apply task are turmoil's simulated ones, all on the simulation's thread. Two
//! things turmoil cannot provide come from here:
//!
//! - the randomness the runtime draws outside the engine (a storage's incarnation, a log
//!   segment's salt; the engine's own comes from
//!   [`Config::random_seed`](crate::Config::random_seed)): call [`seed_randomness`] once at
//!   the start of each run, on the thread that runs it, and the run repeats exactly;
//! - faults of one process rather than of the network or the disk as a whole: run each
//!   host's software through [`SimulatedHost::run`], and pause that process, fill its disk,
//!   make its fsyncs fail, slow its disk down; and a state machine can [`charge`] simulated
//!   time for its work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::sys::host::HostState;

/// Seeds, on the calling thread, every random draw the runtime makes outside the engine while
/// a simulation runs (and the simulated fsync failures of [`SimulatedHost`]). Call it before
/// building the simulation; the same seed then gives the same draws in the same order.
pub fn seed_randomness(seed: u64) {
    crate::sys::random::seed(seed);
}

/// One simulated process: its software, run through [`run`](Self::run), and the faults set
/// on it. Cheap to clone; every clone controls the same process. Keep one per host across
/// restarts.
#[derive(Clone, Debug, Default)]
pub struct SimulatedHost {
    state: Arc<HostState>,
}

impl SimulatedHost {
    /// A process with no fault set.
    pub fn new() -> SimulatedHost {
        SimulatedHost::default()
    }

    /// `software`, as this process: every task the runtime spawns from it belongs to this
    /// process too, and obeys its faults.
    pub fn run<F: Future + 'static>(
        &self,
        software: F,
    ) -> impl Future<Output = F::Output> + use<F> {
        crate::sys::host::Scoped::new(Some(self.state.clone()), software)
    }

    /// Stops the process as SIGSTOP or a VM pause does: none of its tasks runs until
    /// [`resume`](Self::resume), while its clock goes on and messages pile up in its sockets.
    pub fn pause(&self) {
        self.state.set_paused(true);
    }

    /// Lets a paused process run again: it wakes to find time has passed.
    pub fn resume(&self) {
        self.state.set_paused(false);
    }

    /// Whether the process is paused.
    pub fn is_paused(&self) -> bool {
        self.state.is_paused()
    }

    /// Makes every write that needs space fail with `StorageFull`, or no longer.
    pub fn set_disk_full(&self, full: bool) {
        self.state.set_disk_full(full);
    }

    /// The chance that an fsync of a file fails. A failure drops that file's unsynced data
    /// and later fsyncs of it report success without syncing, as Linux does after a
    /// writeback error, so only storage that gives up after a failed fsync stays correct.
    pub fn set_fsync_failure_probability(&self, probability: f64) {
        self.state.set_fsync_failure_probability(probability);
    }

    /// Simulated time every storage call takes.
    pub fn set_disk_latency(&self, latency: Duration) {
        self.state.set_disk_latency(latency);
    }

    /// How many bytes the disk writes per simulated second (0, the default: no limit). A
    /// storage call that writes takes that much longer, on top of
    /// [`set_disk_latency`](Self::set_disk_latency): large writes, such as a snapshot's, then
    /// cost time in proportion to their size.
    pub fn set_disk_bandwidth(&self, bytes_per_second: u64) {
        self.state.set_disk_bandwidth(bytes_per_second);
    }

    /// Call just before crashing or restarting the host with turmoil (`Sim::crash`,
    /// `Sim::bounce`): the runtime's tasks are then dropped in the order they were spawned,
    /// so that the sockets they close and the callers they answer see it in the same order in
    /// every run. (Left to itself, tokio drops them in an order that depends on every task
    /// the process spawned before.)
    pub fn crashing(&self) {
        self.state.crashing();
    }

    /// Call when the process crashes or restarts: the data failed fsyncs dropped, and a
    /// power loss, are forgotten with the process (a new process reads what the disk holds).
    pub fn restarted(&self) {
        self.state.restarted();
    }

    /// Plans a power loss in the middle of storage work: after `operations` more storage
    /// operations that change the disk (a write, a length change, an fsync, a rename, a
    /// removal, opening a file to write), that one and every later one fail with an error
    /// saying "power lost (simulated)". The process then stops; crash its host (which
    /// loses every unsynced write) to finish the power loss, then restart it.
    pub fn lose_power_after(&self, operations: u32) {
        self.state.lose_power_after(operations);
    }

    /// Cancels a planned power loss that has not happened yet.
    pub fn cancel_power_loss(&self) {
        self.state.cancel_power_loss();
    }

    /// Whether a planned power loss has happened.
    pub fn powered_off(&self) -> bool {
        self.state.powered_off()
    }

    /// The runtime's own invariants this process broke so far (across its restarts), each
    /// named by what it requires, in the order they were broken. Outside a simulation a
    /// broken invariant panics in debug builds; inside one the runtime goes on, and this is
    /// how a simulator learns of it: a run that broke any has found a bug.
    pub fn invariants_broken(&self) -> Vec<&'static str> {
        self.state.invariants_broken()
    }
}

/// Says that the state machine's current work (an `apply`, a `snapshot`, a `restore`) takes
/// `cost` of simulated time: inside a simulation, the apply task waits that long once it is
/// done. Outside a simulation, or outside a [`SimulatedHost`], it does nothing.
pub fn charge(cost: Duration) {
    if let Some(host) = crate::sys::host::current() {
        host.charge(cost);
    }
}
