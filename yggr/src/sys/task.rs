//! Blocking work (file I/O): on tokio's blocking pool, or, inside a simulation, right where it
//! is asked for. A simulation runs every host on one thread; a real thread there would see
//! neither the simulated file system nor the simulated clock, and would make runs differ.

/// Runs `work`, which blocks, and returns its result; `Err` says why it did not finish (it
/// panicked or was cancelled), for the caller to report.
pub(crate) async fn run_blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    #[cfg(feature = "simulation")]
    if turmoil::in_simulation() {
        return Ok(work());
    }
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
