//! Examples for yggr.
//!
//! - [`kv`] and the `kv` binary: a replicated key-value service that speaks the Redis
//!   protocol, on `DiskStorage` and `TcpTransport`. `run-three-node.sh` starts three of them.
//! - The `in-memory-cluster` binary: three engines wired together in one process, electing a
//!   leader and replicating commands, with no runtime at all.

pub mod kv;
