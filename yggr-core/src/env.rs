//! The engine's only source of randomness.

use std::ops::Range;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Everything non-deterministic the engine needs from outside. Today that is one thing: the
/// draw of a randomized election timeout (§5.2). Time is not here; it arrives as
/// [`Event::Tick`](crate::Event::Tick).
pub trait Env: Send {
    /// A value drawn uniformly from `range` (`range.start < range.end` is guaranteed).
    fn random_ticks(&mut self, range: Range<u64>) -> u64;
}

/// The default [`Env`]: a ChaCha8 generator. Seed it for reproducible runs; ChaCha8's output is
/// stable across platforms and crate versions, so a seed replays the same run anywhere.
#[derive(Clone, Debug)]
pub struct RandomEnv {
    rng: ChaCha8Rng,
}

impl RandomEnv {
    /// A generator whose whole output is determined by `seed`.
    pub fn seeded(seed: u64) -> RandomEnv {
        RandomEnv {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// A generator seeded from the thread-local entropy source, for production use.
    pub fn from_entropy() -> RandomEnv {
        RandomEnv::seeded(rand::random())
    }
}

impl Default for RandomEnv {
    fn default() -> Self {
        RandomEnv::from_entropy()
    }
}

impl Env for RandomEnv {
    fn random_ticks(&mut self, range: Range<u64>) -> u64 {
        self.rng.random_range(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_the_same_draws() {
        let mut first = RandomEnv::seeded(42);
        let mut second = RandomEnv::seeded(42);
        let a: Vec<u64> = (0..32).map(|_| first.random_ticks(10..20)).collect();
        let b: Vec<u64> = (0..32).map(|_| second.random_ticks(10..20)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn draws_stay_inside_the_half_open_range_and_cover_it() {
        let mut env = RandomEnv::seeded(7);
        let draws: Vec<u64> = (0..2000).map(|_| env.random_ticks(10..20)).collect();
        assert!(draws.iter().all(|draw| (10..20).contains(draw)));
        for expected in 10..20 {
            assert!(draws.contains(&expected), "{expected} never drawn");
        }
    }
}
