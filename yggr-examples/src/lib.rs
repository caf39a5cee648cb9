//! Examples for yggr. The three-node replicated KV service arrives with the runtime; until
//! then `in-memory-cluster` shows the engine electing a leader and replicating commands
//! between three engines wired together in one process.
