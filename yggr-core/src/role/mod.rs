//! Role- and feature-specific behaviour, one concern per file, each an `impl Engine` block.

mod candidate;
mod follower;
mod leader;
mod membership_change;
pub(crate) mod reads;
pub(crate) mod snapshot;
pub(crate) mod transfer;
