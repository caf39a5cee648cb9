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
use std::collections::BTreeSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// One host's switches, shared by all of its tasks and the simulator.
#[derive(Debug, Default)]
pub(crate) struct HostState {
    inner: Mutex<Switches>,
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
    /// State-machine time charged by `simulation::charge`, not yet waited.
    apply_debt: Duration,
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

    /// Forgets what failed fsyncs dropped: the process that saw them is gone.
    pub(crate) fn forget_dropped_writes(&self) {
        self.switches().fsync_dropped.clear();
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
/// and not at all while the host is paused.
pub(crate) struct Scoped<F> {
    host: Option<Arc<HostState>>,
    inner: Pin<Box<F>>,
}

impl<F: Future> Scoped<F> {
    pub(crate) fn new(host: Option<Arc<HostState>>, inner: F) -> Scoped<F> {
        Scoped {
            host,
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for Scoped<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<F::Output> {
        let Some(host) = self.host.clone() else {
            return self.inner.as_mut().poll(context);
        };
        {
            let mut switches = host.switches();
            if switches.paused {
                switches.parked.push(context.waker().clone());
                return Poll::Pending;
            }
        }
        let previous = CURRENT.with(|current| current.replace(Some(host)));
        let polled = self.inner.as_mut().poll(context);
        CURRENT.with(|current| *current.borrow_mut() = previous);
        polled
    }
}

/// Wraps `future` in the current host, if there is one.
pub(crate) fn scope<F: Future>(future: F) -> Scoped<F> {
    Scoped::new(current(), future)
}

/// An injected error for a write that would need space on a full disk.
pub(crate) fn check_space() -> std::io::Result<()> {
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
}

pub(crate) fn fsync(path: &Path) -> Fsync {
    let Some(host) = current() else {
        return Fsync::Sync;
    };
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

/// Simulated time the current host owes after a blocking call: its disk latency after a
/// storage call, and the state-machine time charged meanwhile.
pub(crate) fn owed(disk: bool) -> Duration {
    match current() {
        Some(host) => {
            let mut switches = host.switches();
            let debt = std::mem::take(&mut switches.apply_debt);
            if disk {
                switches.disk_latency + debt
            } else {
                debt
            }
        }
        None => Duration::ZERO,
    }
}
