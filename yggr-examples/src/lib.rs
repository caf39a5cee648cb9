//! Examples for yggr: services built on its public API, to read and to run.
//!
//! The `kv` binary is a replicated key-value service that speaks the Redis protocol, on
//! `DiskStorage` and `TcpTransport`; `run-three-node.sh` starts three of them on this machine.
//! Its pieces are usable on their own, without I/O:
//!
//! ```
//! use bytes::BytesMut;
//! use yggr_examples::kv::resp::{CommandParser, Limits};
//! use yggr_examples::kv::store::{KvCommand, decode, encode};
//!
//! // Bytes from a client, as they arrive: a command split across two reads.
//! let mut parser = CommandParser::new(Limits::default());
//! let mut buffer = BytesMut::from(&b"*3\r\n$3\r\nSET\r\n$5\r\nhello"[..]);
//! assert_eq!(parser.parse(&mut buffer).unwrap(), None, "incomplete: wait for more");
//! buffer.extend_from_slice(b"\r\n$5\r\nworld\r\n");
//! let arguments = parser.parse(&mut buffer).unwrap().expect("a whole command");
//! assert_eq!(arguments, ["SET", "hello", "world"].map(|a| bytes::Bytes::from(a)));
//!
//! // What goes into the Raft log for it, and back.
//! let command = KvCommand::Set { key: arguments[1].clone(), value: arguments[2].clone() };
//! assert_eq!(decode(&encode(&command)).unwrap(), command);
//! ```
//!
//! # Layout
//! - [`kv`]: the service: [`kv::resp`] (the protocol, parsed without I/O), [`kv::store`] (the
//!   state machine), [`kv::commands`] (dispatch and redirects), [`kv::status`]
//!   (`RAFT.STATUS`, `INFO`), [`kv::server`] (the client listener).
//! - `src/bin/kv.rs`: the `kv` command line; `src/bin/in-memory-cluster.rs`: three bare
//!   engines wired together in one process, electing a leader and replicating commands, with
//!   no runtime at all.
//! - `run-three-node.sh`, `bench.sh`: start a local cluster; benchmark it with
//!   `redis-benchmark`.

#![warn(missing_docs)]

pub mod kv;
