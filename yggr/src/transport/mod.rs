//! How nodes reach each other, behind the [`Transport`] trait.
//!
//! - [`local`]: [`LocalNetwork`], nodes in one process, with faults for tests.
//! - [`tcp`]: [`TcpTransport`], nodes over TCP, for production.
//!
//! # The contract
//!
//! - [`Transport::send`] never waits: it queues the message or drops it. Raft recovers lost
//!   messages on its own (it retransmits on the next heartbeat), so a full queue, a peer that
//!   is down or a broken connection is a drop, not an error. It must not block the driver.
//! - [`Transport::recv`] yields the next message addressed to this node, from any peer, and
//!   must be cancel-safe: the driver waits on it next to its timers and client requests and
//!   may drop the future when something else is ready first. `None` means the transport has
//!   shut down for good.
//! - [`Transport::try_recv`] returns a message already waiting, without waiting, so the driver
//!   can take everything that queued up in one go.
//! - [`Transport::flush`] is called after each batch of sends: a transport that buffers may
//!   write them out together there.
//!
//! Messages carry commands as their encoded bytes ([`Message<Bytes>`](yggr_core::Message)).
//! An in-process transport passes them as they are; a network transport encodes them with
//! [`yggr_core::wire`].

pub mod local;
pub mod tcp;

use std::future::Future;

use bytes::Bytes;
use yggr_core::{Message, NodeId};

pub use local::{LocalNetwork, LocalTransport};
pub use tcp::{TcpHandle, TcpOptions, TcpOptionsError, TcpStats, TcpTransport};

/// One node's connection to its peers. See the [module documentation](self) for the contract.
pub trait Transport: Send + 'static {
    /// Queues `message` for `to`, or drops it. Never waits.
    fn send(&mut self, to: NodeId, message: Message<Bytes>);

    /// Writes out whatever `send` buffered. The default does nothing.
    fn flush(&mut self) {}

    /// The next message for this node; `None` once the transport has shut down. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Option<Message<Bytes>>> + Send;

    /// A message already waiting, if any, without waiting.
    fn try_recv(&mut self) -> Option<Message<Bytes>>;
}
