//! The runtime's seams to the outside world, one module per resource.
//!
//! Everything the runtime does with files goes through [`fs`]. Built without the `simulation`
//! feature, it is the standard library and nothing else. Built with it, each call checks
//! whether it runs inside a turmoil simulation (`turmoil::in_simulation`) and, if so, uses
//! turmoil's simulated file system instead, whose crash semantics (unsynced writes lost,
//! never-synced files gone) are what the simulator tests `DiskStorage` against. The choice is
//! made at run time, not by `cfg` alone, because Cargo unifies features across a workspace:
//! a test binary that links the simulator and one that uses real files may well be built with
//! the same features.

pub(crate) mod fs;
pub(crate) mod task;
