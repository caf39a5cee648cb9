//! The replicated key-value service behind the `kv` binary: a [`store::KvStore`] state
//! machine replicated by yggr, served to Redis clients.
//!
//! # Layout
//! - [`resp`]: the Redis protocol, parsed without I/O.
//! - [`store`]: the state machine (keys and values, and the members' addresses).
//! - [`commands`]: what each command does, and how errors become redirects.
//! - [`addresses`]: the members' addresses, recovered from stored state before starting.
//! - [`membership`]: whether this node is a member, or knows it was removed.
//! - [`status`]: `RAFT.STATUS` and `INFO`.
//! - [`server`]: the client listener.

pub mod addresses;
pub mod commands;
pub mod membership;
pub mod resp;
pub mod server;
pub mod status;
pub mod store;
