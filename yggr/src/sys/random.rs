//! Random draws the engine does not make: a storage's incarnation, a log segment's salt.
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
}

/// True with probability `probability`, from the simulated runs' generator.
#[cfg(feature = "simulation")]
pub(crate) fn chance(probability: f64) -> bool {
    SIMULATED.with(|generator| generator.borrow_mut().random_bool(probability))
}
