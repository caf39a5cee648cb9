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
//! - [`Transport::set_identity`] is called once, before the node starts, with the node's
//!   [`NodeIdentity`]: a network transport tells its peers and checks theirs, so that a
//!   node whose data was lost is refused rather than taken for its former self.
//!
//! Messages carry commands as their encoded bytes ([`Message<Bytes>`](yggr_core::Message)).
//! An in-process transport passes them as they are; a network transport encodes them with
//! [`yggr_core::wire`].

pub mod local;
pub mod tcp;

use std::future::Future;

use bytes::Bytes;
use yggr_core::{Message, NodeId};

use crate::identity::NodeIdentity;

pub use local::{LocalNetwork, LocalTransport};
pub use tcp::{
    TcpHandle, TcpOptions, TcpOptionsError, TcpStats, TcpTransport, TlsConfig, TlsError,
};

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

    /// Tells the transport who this node is: [`Node::start`](crate::Node::start) calls it
    /// once, after loading storage and before the node sends or takes any message. A network
    /// transport should send it to peers and refuse peers whose own identity, or whose idea
    /// of this node's, does not match (see [`crate::identity`]). The default ignores it.
    fn set_identity(&mut self, identity: NodeIdentity) {
        let _ = identity;
    }
}
