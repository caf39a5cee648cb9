//! The runtime's seams to the outside world, one module per resource.
//!
//! Everything the runtime does with files goes through [`fs`], with sockets through [`net`],
//! with blocking work through [`task`], and every random draw that is not the engine's
//! (seeded by `Config::random_seed`) through [`random`]. Built without the `simulation`
//! feature, it is the standard library and nothing else. Built with it, each call checks
//! whether it runs inside a turmoil simulation (`turmoil::in_simulation`) and, if so, uses
//! turmoil's simulated file system instead, whose crash semantics (unsynced writes lost,
//! never-synced files gone) are what the simulator tests `DiskStorage` against. The choice is
//! made at run time, not by `cfg` alone, because Cargo unifies features across a workspace:
//! a test binary that links the simulator and one that uses real files may well be built with
//! the same features.

/// Whether the calling code runs inside a turmoil simulation, on a simulated host.
#[cfg(feature = "simulation")]
fn simulating() -> bool {
    turmoil::in_simulation()
}

/// Picks the simulated or the real version of one call: `$simulated` when the feature is on
/// and a simulation runs, `$real` otherwise (the only one compiled without the feature).
macro_rules! either {
    ($simulated:expr, $real:expr) => {{
        #[cfg(feature = "simulation")]
        {
            if $crate::sys::simulating() {
                $simulated
            } else {
                $real
            }
        }
        #[cfg(not(feature = "simulation"))]
        {
            $real
        }
    }};
}

/// Reports that the runtime broke one of its own invariants (`what` names it) without
/// stopping: inside a simulation the host records it and the simulator fails the run (a
/// panic in a spawned task would only stop that task, and a simulated node that stops is
/// restarted); in a debug build outside one it panics; in a release build it logs an error.
pub(crate) fn invariant_broken(what: &'static str) {
    #[cfg(feature = "simulation")]
    if let Some(host) = host::current() {
        host.invariant_broken(what);
        return;
    }
    debug_assert!(false, "invariant broken: {what}");
    tracing::error!(target: "yggr::node", invariant = what, "an invariant of the runtime was broken");
}

pub(crate) mod fs;
#[cfg(feature = "simulation")]
pub(crate) mod host;
pub(crate) mod net;
pub(crate) mod random;
pub(crate) mod task;
