//! Tasks and blocking work.
//!
//! Blocking work (file I/O, the state machine) runs on tokio's blocking pool, or, inside a
//! simulation, right where it is asked for: a simulation runs every host on one thread, and a
//! real thread there would see neither the simulated file system nor the simulated clock,
//! and would make runs differ. Afterwards a simulated host waits, in simulated time, for
//! whatever the simulator says the work cost (a slow disk, a slow state machine).
//!
//! Tasks are tokio's, spawned through [`spawn`] (or wrapped with [`scoped`] for a `JoinSet`)
//! so that inside a simulation each one stays tied to the host that spawned it (see
//! `sys::host`); outside one the wrapper is not compiled in.

use std::future::Future;

/// What a piece of blocking work is, for the simulated cost it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Blocking {
    /// File I/O: it takes the simulated host's disk latency.
    Disk,
    /// The state machine: it takes whatever its code charged.
    StateMachine,
}

/// Runs `work`, which blocks, and returns its result; `Err` says why it did not finish (it
/// panicked or was cancelled), for the caller to report.
pub(crate) async fn run_blocking<T: Send + 'static>(
    kind: Blocking,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    #[cfg(feature = "simulation")]
    if turmoil::in_simulation() {
        let done = work();
        let owed = super::host::owed(kind == Blocking::Disk);
        if !owed.is_zero() {
            tokio::time::sleep(owed).await;
        }
        return Ok(done);
    }
    let _ = kind;
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| error.to_string())
}

/// Starts `work`, which blocks, without waiting for it. Inside a simulation it runs at once.
pub(crate) fn start_blocking(work: impl FnOnce() + Send + 'static) {
    #[cfg(feature = "simulation")]
    if turmoil::in_simulation() {
        work();
        return;
    }
    drop(tokio::task::spawn_blocking(work));
}

/// `future`, tied to the current simulated host if there is one.
#[cfg(feature = "simulation")]
pub(crate) fn scoped<F: Future + 'static>(future: F) -> super::host::Scoped<F> {
    super::host::scope(future)
}

/// `future` itself: without the simulation there are no hosts to tie it to.
#[cfg(not(feature = "simulation"))]
pub(crate) fn scoped<F: Future + 'static>(future: F) -> F {
    future
}

/// Spawns `future` on the current runtime, tied to the current simulated host if any.
pub(crate) fn spawn<F>(future: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(scoped(future))
}
