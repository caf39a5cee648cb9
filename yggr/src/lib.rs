//! # yggr
//!
//! The tokio runtime for the yggr Raft library: `Node`, `Config`, `DiskStorage`,
//! `TcpTransport` and the apply task arrive with the runtime issue. Today this crate
//! re-exports the protocol engine so that applications can depend on `yggr` alone.
//!
//! # Layout
//! - [`core`]: the pure protocol engine (`yggr-core`), re-exported whole.
//! - The engine's identity types ([`NodeId`], [`Term`], [`LogIndex`]) at the top level.

pub use yggr_core as core;
pub use yggr_core::{LogIndex, NodeId, Term};
