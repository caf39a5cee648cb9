//! The simulated host a piece of the runtime belongs to, and the faults a simulator sets on
//! it: a process pause, a full disk, failing fsyncs, a slow disk, a slow state machine.
//!
//! A simulator wraps a host's software in [`Scoped`] (through
//! [`SimulatedHost::run`](crate::simulation::SimulatedHost::run)). Every task the runtime
//! spawns while that software runs is wrapped the same way (`sys::task::spawn`), so each
//! poll of any of the host's tasks knows its host: the file-system seam reads the disk faults
//! from it, and a paused host's tasks are simply not polled (their wake-ups are kept and
//! replayed on resume), which is what SIGSTOP does to a process: its clock runs on, its
//! sockets fill, nothing of it runs.
//!
//! Outside a scoped future there is no current host, and nothing here has any effect.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// One host's switches, shared by all of its tasks and the simulator.
#[derive(Debug)]
pub(crate) struct HostState {
    /// Tells hosts apart in this thread's list of tasks.
    id: u64,
    inner: Mutex<Switches>,
}

/// Numbers hosts.
static NEXT_HOST: AtomicU64 = AtomicU64::new(0);

impl Drop for HostState {
    /// The host is gone for good: forget its list of tasks.
    fn drop(&mut self) {
        let _ = TASKS.try_with(|tasks| {
            if let Ok(mut tasks) = tasks.try_borrow_mut() {
                tasks.remove(&self.id);
            }
        });
    }
}

impl Default for HostState {
    fn default() -> HostState {
        HostState {
            id: NEXT_HOST.fetch_add(1, Ordering::Relaxed),
            inner: Mutex::new(Switches::default()),
        }
    }
}

#[derive(Debug, Default)]
struct Switches {
    paused: bool,
    /// Tasks that were woken while the host was paused.
    parked: Vec<Waker>,
    disk_full: bool,
    /// The chance that an fsync fails.
    fsync_failure_probability: f64,
    /// Files whose dirty data a failed fsync dropped: later fsyncs of them report success
    /// without making that data durable, as Linux does after a writeback error.
    fsync_dropped: BTreeSet<PathBuf>,
    /// Added after every blocking storage call.
    disk_latency: Duration,
    /// Bytes the disk writes per simulated second; 0 for no limit.
    disk_bandwidth: u64,
    /// Time owed for bytes written at `disk_bandwidth`, not yet waited.
    disk_write_debt: Duration,
    /// State-machine time charged by `simulation::charge`, not yet waited.
    apply_debt: Duration,
    /// Storage operations left before the power goes (a crash in the middle of a storage
    /// call), if one is planned.
    power_loss_after: Option<u32>,
    /// The power went: every storage operation fails until the process restarts.
    powered_off: bool,
    /// The simulator is about to crash or restart the host (see `Scoped`'s `Drop`).
    crashing: bool,
    /// The runtime's own invariants this process broke, by name, in order: kept across
    /// restarts, for the simulator to fail the run with.
    invariants_broken: Vec<&'static str>,
}

impl HostState {
    fn switches(&self) -> MutexGuard<'_, Switches> {
        // No code runs user callbacks under this lock, so it cannot be poisoned.
        self.inner
            .lock()
            .expect("a host's switches are never locked across a panic")
    }

    pub(crate) fn set_paused(&self, paused: bool) {
        let parked = {
            let mut switches = self.switches();
            switches.paused = paused;
            if paused {
                Vec::new()
            } else {
                std::mem::take(&mut switches.parked)
            }
        };
        for waker in parked {
            waker.wake();
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.switches().paused
    }

    pub(crate) fn set_disk_full(&self, full: bool) {
        self.switches().disk_full = full;
    }

    pub(crate) fn set_fsync_failure_probability(&self, probability: f64) {
        self.switches().fsync_failure_probability = probability.clamp(0.0, 1.0);
    }

    pub(crate) fn set_disk_latency(&self, latency: Duration) {
        self.switches().disk_latency = latency;
    }

    /// Forgets what failed fsyncs dropped and any power loss: the process that saw them is
    /// gone.
    /// The host is about to go down: its runtime's tasks are dropped next, in spawn order.
    pub(crate) fn crashing(&self) {
        self.switches().crashing = true;
    }

    pub(crate) fn restarted(&self) {
        let mut switches = self.switches();
        switches.crashing = false;
        switches.fsync_dropped.clear();
        switches.power_loss_after = None;
        switches.powered_off = false;
    }

    pub(crate) fn invariant_broken(&self, what: &'static str) {
        self.switches().invariants_broken.push(what);
    }

    pub(crate) fn invariants_broken(&self) -> Vec<&'static str> {
        self.switches().invariants_broken.clone()
    }

    pub(crate) fn lose_power_after(&self, operations: u32) {
        self.switches().power_loss_after = Some(operations);
    }

    pub(crate) fn cancel_power_loss(&self) {
        self.switches().power_loss_after = None;
    }

    pub(crate) fn powered_off(&self) -> bool {
        self.switches().powered_off
    }

    pub(crate) fn set_disk_bandwidth(&self, bytes_per_second: u64) {
        self.switches().disk_bandwidth = bytes_per_second;
    }

    pub(crate) fn charge(&self, cost: Duration) {
        let mut switches = self.switches();
        switches.apply_debt = switches.apply_debt.saturating_add(cost);
    }
}

thread_local! {
    /// The host whose task is being polled on this thread, if any.
    static CURRENT: RefCell<Option<Arc<HostState>>> = const { RefCell::new(None) };
}

/// The host of the task being polled now, if it is a simulated one.
pub(crate) fn current() -> Option<Arc<HostState>> {
    CURRENT.with(|current| current.borrow().clone())
}

/// A future that belongs to a host (or to none): polled with that host as the current one,
/// and not at all while the host is paused. When its host crashes, the futures of all the
/// host's tasks are dropped in the order they were spawned (see [`HostState::crashing`]).
pub(crate) enum Scoped<F> {
    /// No simulated host: the future alone.
    Plain(Pin<Box<F>>),
    /// On a simulated host; the future is shared with the host's list of tasks so that a
    /// crash can drop it.
    Hosted {
        host: Arc<HostState>,
        inner: Arc<Mutex<Option<Pin<Box<F>>>>>,
    },
}

/// One task of a simulated host, as its host's list keeps it.
struct Task {
    /// Whether the task's future is still there.
    alive: Box<dyn Fn() -> bool>,
    /// Drops the task's future, if it is still there.
    drop: Box<dyn FnOnce()>,
}

thread_local! {
    /// Each simulated host's tasks, by host id, in the order they were spawned.
    static TASKS: RefCell<BTreeMap<u64, Vec<Task>>> = const { RefCell::new(BTreeMap::new()) };
}

impl<F: Future + 'static> Scoped<F> {
    pub(crate) fn new(host: Option<Arc<HostState>>, inner: F) -> Scoped<F> {
        let Some(host) = host else {
            return Scoped::Plain(Box::pin(inner));
        };
        let inner = Arc::new(Mutex::new(Some(Box::pin(inner))));
        let weak = Arc::downgrade(&inner);
        let watched = Arc::downgrade(&inner);
        let task = Task {
            // A future being polled right now (its lock taken) is alive: never wait for it.
            alive: Box::new(move || {
                watched
                    .upgrade()
                    .is_some_and(|inner| inner.try_lock().map_or(true, |future| future.is_some()))
            }),
            drop: Box::new(move || {
                if let Some(inner) = weak.upgrade() {
                    // Taken out under the lock, dropped after it: dropping may run code
                    // that polls or drops other tasks of the host.
                    let future = lock(&inner).take();
                    drop(future);
                }
            }),
        };
        TASKS.with(|tasks| {
            let mut tasks = tasks.borrow_mut();
            let list = tasks.entry(host.id).or_default();
            // Forget finished tasks now and then, so the list follows the live ones.
            if list.len() >= 64 && list.len().is_power_of_two() {
                list.retain(|task| (task.alive)());
            }
            list.push(task);
        });
        Scoped::Hosted { host, inner }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Drops the future of every task of `host` still there, oldest first, with the host as the
/// current one.
fn drop_tasks(host: &Arc<HostState>) {
    let Some(list) = TASKS.with(|tasks| tasks.borrow_mut().remove(&host.id)) else {
        return;
    };
    let previous = CURRENT.with(|current| current.replace(Some(host.clone())));
    for task in list {
        (task.drop)();
    }
    CURRENT.with(|current| *current.borrow_mut() = previous);
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        match self.get_mut() {
            Scoped::Plain(inner) => inner.as_mut().poll(context),
            Scoped::Hosted { host, inner } => {
                {
                    let mut switches = host.switches();
                    if switches.paused {
                        switches.parked.push(context.waker().clone());
                        return Poll::Pending;
                    }
                }
                let previous = CURRENT.with(|current| current.replace(Some(host.clone())));
                let polled = match lock(inner).as_mut() {
                    Some(future) => future.as_mut().poll(context),
                    // Dropped by a crash: it never completes.
                    None => Poll::Pending,
                };
                CURRENT.with(|current| *current.borrow_mut() = previous);
                polled
            }
        }
    }
}

impl<F> Drop for Scoped<F> {
    /// A crash drops the host's runtime, which drops its tasks in an order of its own (by
    /// task ids, which count every task the process ever spawned). The first of the host's
    /// tasks dropped drops all the others' futures, in the order they were spawned, so that
    /// what their drops do (closing sockets, waking other hosts' tasks) happens in the same
    /// order in every run.
    fn drop(&mut self) {
        let Scoped::Hosted { host, inner } = self else {
            return;
        };
        // Each lock is released before the next statement: `drop_tasks` takes them again.
        let crashing = host.switches().crashing;
        let still_there = lock(inner).is_some();
        if crashing && still_there {
            drop_tasks(host);
        }
    }
}

/// Wraps `future` in the current host, if there is one.
pub(crate) fn scope<F: Future + 'static>(future: F) -> Scoped<F> {
    Scoped::new(current(), future)
}

/// Counts one storage operation that changes the disk (or makes a change durable) on the
/// current host; fails it, and every later one, once the power is gone.
pub(crate) fn disk_operation() -> std::io::Result<()> {
    let Some(host) = current() else {
        return Ok(());
    };
    let mut switches = host.switches();
    if let Some(left) = switches.power_loss_after {
        if left == 0 {
            switches.power_loss_after = None;
            switches.powered_off = true;
        } else {
            switches.power_loss_after = Some(left - 1);
        }
    }
    if switches.powered_off {
        return Err(std::io::Error::other("power lost (simulated)"));
    }
    Ok(())
}

/// An injected error for a write that would need space on a full disk.
pub(crate) fn check_space() -> std::io::Result<()> {
    disk_operation()?;
    match current() {
        Some(host) if host.switches().disk_full => Err(std::io::Error::new(
            std::io::ErrorKind::StorageFull,
            "no space left on device (simulated)",
        )),
        _ => Ok(()),
    }
}

/// What an fsync of `path` does on the current host: `Sync` (really sync), `Fail` (report an
/// error and drop the file's dirty data), or `Pretend` (report success without syncing: a
/// failed fsync already dropped the data).
pub(crate) enum Fsync {
    Sync,
    Fail,
    Pretend,
    PowerLost,
}

pub(crate) fn fsync(path: &Path) -> Fsync {
    let Some(host) = current() else {
        return Fsync::Sync;
    };
    if disk_operation().is_err() {
        return Fsync::PowerLost;
    }
    let mut switches = host.switches();
    if switches.fsync_dropped.contains(path) {
        return Fsync::Pretend;
    }
    let probability = switches.fsync_failure_probability;
    if probability > 0.0 && super::random::chance(probability) {
        switches.fsync_dropped.insert(path.to_path_buf());
        return Fsync::Fail;
    }
    Fsync::Sync
}

/// Charges the current host's disk for writing `bytes`, at its bandwidth: waited after the
/// blocking call that wrote them.
pub(crate) fn charge_written(bytes: usize) {
    let Some(host) = current() else {
        return;
    };
    let mut switches = host.switches();
    if switches.disk_bandwidth > 0 {
        let cost = Duration::from_secs_f64(bytes as f64 / switches.disk_bandwidth as f64);
        switches.disk_write_debt = switches.disk_write_debt.saturating_add(cost);
    }
}

/// Simulated time the current host owes after a blocking call: its disk latency and the
/// bytes it wrote after a storage call, and the state-machine time charged meanwhile.
pub(crate) fn owed(disk: bool) -> Duration {
    match current() {
        Some(host) => {
            let mut switches = host.switches();
            let debt = std::mem::take(&mut switches.apply_debt);
            if disk {
                let written = std::mem::take(&mut switches.disk_write_debt);
                switches.disk_latency + written + debt
            } else {
                debt
            }
        }
        None => Duration::ZERO,
    }
}
