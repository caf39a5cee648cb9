//! What a simulator sets up before running yggr inside a turmoil simulation.
//!
//! Inside a simulation (`turmoil::in_simulation()`), the runtime's files, sockets, blocking
//! work and apply task are turmoil's simulated ones, all on the simulation's thread. The one
//! thing turmoil cannot provide is the randomness the runtime draws outside the engine (a
//! storage's incarnation, a log segment's salt; the engine's own comes from
//! [`Config::random_seed`](crate::Config::random_seed)): call [`seed_randomness`] once at the
//! start of each run, on the thread that runs it, and the run repeats exactly.

/// Seeds, on the calling thread, every random draw the runtime makes outside the engine while
/// a simulation runs. Call it before building the simulation; the same seed then gives the
/// same draws in the same order.
pub fn seed_randomness(seed: u64) {
    crate::sys::random::seed(seed);
}
