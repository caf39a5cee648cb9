//! Random draws the engine does not make (a storage's incarnation, a log segment's salt), and
//! the one process-wide counter the runtime keeps (numbering snapshot preparations).
//!
//! Outside a simulation they come from the operating system's entropy. Inside one they come
//! from a generator on the simulation's thread, which the simulator seeds at the start of
//! every run ([`seed`]): every host runs on that one thread in an order fixed by the run's
//! seed, so the draws, and the run, repeat exactly.

#[cfg(feature = "simulation")]
use std::cell::RefCell;

#[cfg(feature = "simulation")]
use rand::{RngExt, SeedableRng};
#[cfg(feature = "simulation")]
use rand_chacha::ChaCha8Rng;

#[cfg(feature = "simulation")]
thread_local! {
    /// The simulated runs' generator; seeded with 0 until [`seed`] is called.
    static SIMULATED: RefCell<ChaCha8Rng> = RefCell::new(ChaCha8Rng::seed_from_u64(0));
}

/// The process's counter, outside a simulation.
static SEQUENCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

#[cfg(feature = "simulation")]
thread_local! {
    /// The simulated runs' counter; starts over at every [`seed`].
    static SIMULATED_SEQUENCE: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// The next value of a counter unique to this process (to this run, inside a simulation: a
/// process-wide counter would make a run depend on the runs before it in the process).
pub(crate) fn next_sequence() -> u64 {
    either!(
        SIMULATED_SEQUENCE.with(|sequence| {
            let next = sequence.get();
            sequence.set(next + 1);
            next
        }),
        SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A random `u64`.
pub(crate) fn u64() -> u64 {
    either!(
        SIMULATED.with(|generator| generator.borrow_mut().random()),
        rand::random()
    )
}

/// Starts this thread's simulated draws over from `value`.
#[cfg(feature = "simulation")]
pub(crate) fn seed(value: u64) {
    SIMULATED.with(|generator| *generator.borrow_mut() = ChaCha8Rng::seed_from_u64(value));
    SIMULATED_SEQUENCE.with(|sequence| sequence.set(0));
}

/// True with probability `probability`, from the simulated runs' generator.
#[cfg(feature = "simulation")]
pub(crate) fn chance(probability: f64) -> bool {
    SIMULATED.with(|generator| generator.borrow_mut().random_bool(probability))
}
