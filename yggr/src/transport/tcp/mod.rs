//! [`TcpTransport`]: nodes talking over TCP.
//!
//! # Design
//!
//! - **Outbound**: one connection and one writer task per peer, fed by a bounded queue
//!   ([`TcpOptions::outbound_queue`] messages). [`Transport::send`] never waits: when the
//!   queue is full the message is dropped (and counted), which Raft recovers from by
//!   retransmitting. The writer takes everything queued at once and writes all of it as
//!   frames in one `write` call. A quiet connection carries a keep-alive frame every third
//!   of [`TcpOptions::idle_timeout`], so a live peer never closes it; and since the peer
//!   never writes on it, the writer also watches it for reading, which shows a close or a
//!   reset before the next message instead of losing that message to it (a write that fails
//!   anyway is made once more over a fresh connection). A broken connection is
//!   re-established, with exponential backoff and jitter after a failed connect or an
//!   early close; messages queued while it is down are dropped rather than sent stale.
//! - **Inbound**: one acceptor task, one reader task per accepted connection. A connection
//!   starts with a handshake naming the protocol version and the sender's id; a sender
//!   outside the address book, a bad handshake, a handshake that does not arrive in time, a
//!   frame over [`TcpOptions::max_frame_bytes`], bytes that do not decode, or a message whose
//!   sender differs from the handshake's closes that connection alone and is counted in
//!   [`TcpStats`]. The handshake also carries the sender's [`NodeIdentity`] and the
//!   incarnation it knows this node by; a peer of another cluster, a peer that came back
//!   with another incarnation than the one this transport accepted from it, and a peer that
//!   knows this node by another incarnation than its own (this node lost its data) are
//!   refused and counted in [`TcpStats::refused_identity`] (see [`crate::identity`]). Since
//!   the connecting side carries what it knows of the other, both ends of such a pair refuse,
//!   and log why. A connection that delivers nothing, keep-alives included, for
//!   [`TcpOptions::idle_timeout`] is closed, so a peer gone without a goodbye does not hold
//!   a slot. Nothing a peer sends can panic or stall the node.
//! - **Address book**: the peers this node may talk to, by id. It may name nodes that are
//!   not members yet, and it can be changed while running through a [`TcpHandle`], so a node
//!   can be added to the cluster later.
//!
//! - **Handshakes are bounded**: an accepted connection holds one of
//!   [`TcpOptions::max_inbound_connections`] slots, and until its handshake is done one of
//!   [`TcpOptions::max_pending_handshakes`] places, the oldest giving way to a newer one; the
//!   [`TcpOptions::handshake_timeout`] covers the TLS handshake and yggr's together. So a
//!   flood of connections that never finish their handshake neither holds slots for long nor
//!   keeps real peers out.
//!
//! The wire format (module `frame`): a handshake, then length-prefixed protobuf frames
//! (the `yggr_core::wire` encoding) and empty keep-alive frames.
//!
//! # TLS
//!
//! Plaintext is the default. With [`TcpOptions::tls`] set (a [`TlsConfig`]: this node's
//! certificate chain and key, and the CA bundle, in PEM), every connection is mutual TLS 1.3
//! (rustls, with the ring provider), and the yggr handshake and frames travel inside it.
//!
//! **Identity is bound to the certificate.** A node's certificate names its node id as a
//! URI subject alternative name, [`yggr://node/<id>`](NODE_ID_URI_PREFIX), exactly once.
//! A node accepts a connection only if the client certificate chains to its CA bundle, is
//! valid now, and names a node id; the yggr handshake must then name that same id
//! (else [`TcpStats::refused_certificate_mismatch`]), and every message on the connection
//! must name it as its sender, as always. A node connects to a peer only if the server
//! certificate chains to the CA bundle, is valid now, and names the id it meant to reach
//! (else [`TcpStats::refused_server_certificates`]). So a node holding node 2's key can
//! speak as node 2, and be reached as node 2, and as no other. A transport's own
//! certificate must name its own id ([`TcpTransport::start_with`] checks). Refusals are
//! counted in [`TcpStats`] and logged at warn with the peer's address.
//!
//! A TLS node refuses a plaintext peer, and a plaintext node a TLS peer, each with a log line
//! that says so ([`TcpStats::refused_transport_mismatch`]): the first byte of a TLS
//! connection tells it apart before anything else is read.
//!
//! **Rotation**: [`TcpHandle::reload_tls`] reads the files again, [`TcpHandle::set_tls`]
//! takes new material; connections made after use it (new certificate, key and CA), those
//! already open keep going until they close. A certificate is checked when a connection is
//! made: one that expires, or whose CA is rotated out, while a connection lives does not end
//! that connection.
//!
//! **What TLS protects**: the confidentiality and integrity of everything between two nodes,
//! and who may take part: only a holder of a key whose certificate the CA issued, and only
//! under the id the certificate names. **What it does not**: a node whose key was stolen
//! (there is no revocation list: rotate the CA to shut it out, and remove it from the
//! cluster); traffic analysis (sizes and timing of messages); a peer within the cluster that
//! misbehaves under its own id (Raft trusts its members); denial of service by anyone who
//! can reach the port (bounded, as above, not prevented); the clients of a service built on
//! yggr, which need their own protection.
//!
//! [`TcpOptions`] are checked when the transport starts ([`TcpOptions::validate`]); every
//! node of a cluster should use the same ones.

mod frame;
mod inbound;
mod outbound;
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use yggr_core::{Message, NodeId};

use self::frame::Handshake;
use super::Transport;
use crate::identity::NodeIdentity;
use crate::sys::net::TcpListener;
use crate::sys::task::scoped;

pub use self::tls::{NODE_ID_URI_PREFIX, TlsConfig, TlsError};

/// Limits and timings of a [`TcpTransport`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TcpOptions {
    /// The largest frame accepted from a peer; a longer one closes the connection. Default
    /// 64 MiB (a snapshot chunk or a batch of entries must fit); from [`MIN_FRAME_BYTES`] to
    /// [`MAX_FRAME_BYTES`]. Every node must use the same value.
    pub max_frame_bytes: usize,
    /// Messages queued per peer before further ones are dropped. Default 4096; at most
    /// [`MAX_TCP_LIMIT`], like the two limits below.
    pub outbound_queue: usize,
    /// Messages received and not yet taken by the node before readers wait. Default 8192.
    pub inbound_queue: usize,
    /// Inbound connections open at once; more are closed at once. Default 1024.
    pub max_inbound_connections: usize,
    /// How long an inbound connection may take to send its handshake. Default 5 s; from
    /// [`MIN_TCP_DURATION`] to [`MAX_TCP_DURATION`], like every duration here but
    /// `idle_timeout`.
    pub handshake_timeout: Duration,
    /// How long a connect or a write (a keep-alive's included) may take before the
    /// connection counts as broken. Default 5 s.
    pub io_timeout: Duration,
    /// An inbound connection that delivers nothing for this long is closed, so a peer that
    /// vanished without closing it (a power cut) does not hold a slot for ever. A live peer's
    /// connection is never idle that long: its writer sends a keep-alive after a third of it
    /// without traffic (so every node must use the same value), and a writer that finds its
    /// connection closed anyway reconnects before it writes. Default 60 s; at least 50 ms
    /// ([`MIN_IDLE_TIMEOUT`]).
    ///
    /// The transport does not know the election timeout, but the two are related: keep this
    /// well above it (the default is sixty times the longest default election timeout), so
    /// that a node stalled for less than an election timeout (a long pause of its process, a
    /// saturated link), which the cluster rides out without an election, does not lose its
    /// connections either.
    pub idle_timeout: Duration,
    /// The first wait before reconnecting after a failed connect, or after the second
    /// connection in a row that the peer closed within `reconnect_backoff_max` of its making
    /// (it refuses this node, say); it doubles up to `reconnect_backoff_max`. Default 50 ms.
    pub reconnect_backoff_min: Duration,
    /// The longest wait before reconnecting. Default 2 s.
    pub reconnect_backoff_max: Duration,
    /// Inbound connections still in their handshake (TLS's and yggr's) at once. When one
    /// more arrives, the oldest of them is closed to make room (and counted in
    /// [`TcpStats::handshakes_evicted`]), so a flood of connections that never finish their
    /// handshake holds at most this many slots, for a moment each, and a real peer, whose
    /// handshake takes a round trip or two, still gets in. Default 64; at most
    /// [`MAX_TCP_LIMIT`]. Keep it well below `max_inbound_connections`, whose slots these
    /// connections hold too.
    pub max_pending_handshakes: usize,
    /// Mutual TLS: this node's certificate and key, and the CA its peers' certificates must
    /// chain to. `None` (the default) speaks plaintext. A TLS node refuses plaintext peers,
    /// and a plaintext node TLS peers: every node of a cluster must agree. See the [module
    /// documentation](self) and [`TlsConfig`].
    pub tls: Option<TlsConfig>,
}

/// The smallest [`TcpOptions::max_frame_bytes`] accepted (1 KiB): every message that carries
/// no entries and no snapshot data fits it many times over.
pub const MIN_FRAME_BYTES: usize = 1 << 10;

/// The largest [`TcpOptions::max_frame_bytes`] accepted: a frame's length travels as a u32.
pub const MAX_FRAME_BYTES: usize = u32::MAX as usize;

/// The largest [`TcpOptions::outbound_queue`], [`TcpOptions::inbound_queue`],
/// [`TcpOptions::max_inbound_connections`] and [`TcpOptions::max_pending_handshakes`] accepted (2³⁰, as for the node's own queues):
/// far above any useful value, and within what tokio's channels and semaphores can hold.
pub const MAX_TCP_LIMIT: usize = 1 << 30;

/// The shortest duration accepted for any of [`TcpOptions`]' timeouts and backoffs: tokio's
/// timers count whole milliseconds.
pub const MIN_TCP_DURATION: Duration = Duration::from_millis(1);

/// The shortest [`TcpOptions::idle_timeout`] accepted. Keep-alives go every third of it;
/// much below this they would race the scheduler, and live peers would lose connections.
pub const MIN_IDLE_TIMEOUT: Duration = Duration::from_millis(50);

/// The longest duration accepted for any of [`TcpOptions`]' timeouts and backoffs: an hour.
pub const MAX_TCP_DURATION: Duration = Duration::from_secs(3600);

impl TcpOptions {
    /// Checks every limit and timing, as [`TcpTransport::start_with`] does before it binds.
    ///
    /// # Errors
    /// [`TcpOptionsError`], naming the first field found outside its range: a limit of
    /// zero or above its maximum, a duration below its floor or above an hour, or a
    /// `reconnect_backoff_min` above `reconnect_backoff_max`.
    pub fn validate(&self) -> Result<(), TcpOptionsError> {
        let limits = [
            (
                "max_frame_bytes",
                self.max_frame_bytes,
                MIN_FRAME_BYTES,
                MAX_FRAME_BYTES,
            ),
            ("outbound_queue", self.outbound_queue, 1, MAX_TCP_LIMIT),
            ("inbound_queue", self.inbound_queue, 1, MAX_TCP_LIMIT),
            (
                "max_inbound_connections",
                self.max_inbound_connections,
                1,
                MAX_TCP_LIMIT,
            ),
            (
                "max_pending_handshakes",
                self.max_pending_handshakes,
                1,
                MAX_TCP_LIMIT,
            ),
        ];
        for (field, value, min, max) in limits {
            if !(min..=max).contains(&value) {
                return Err(TcpOptionsError::LimitOutOfRange {
                    field,
                    value,
                    min,
                    max,
                });
            }
        }
        let durations = [
            (
                "handshake_timeout",
                self.handshake_timeout,
                MIN_TCP_DURATION,
            ),
            ("io_timeout", self.io_timeout, MIN_TCP_DURATION),
            ("idle_timeout", self.idle_timeout, MIN_IDLE_TIMEOUT),
            (
                "reconnect_backoff_min",
                self.reconnect_backoff_min,
                MIN_TCP_DURATION,
            ),
            (
                "reconnect_backoff_max",
                self.reconnect_backoff_max,
                MIN_TCP_DURATION,
            ),
        ];
        for (field, value, min) in durations {
            if !(min..=MAX_TCP_DURATION).contains(&value) {
                return Err(TcpOptionsError::DurationOutOfRange {
                    field,
                    value,
                    min,
                    max: MAX_TCP_DURATION,
                });
            }
        }
        if self.reconnect_backoff_min > self.reconnect_backoff_max {
            return Err(TcpOptionsError::InvertedBackoff {
                min: self.reconnect_backoff_min,
                max: self.reconnect_backoff_max,
            });
        }
        Ok(())
    }

    /// How long an outbound connection may stay quiet before its writer sends a keep-alive:
    /// a third of the idle timeout, so two may be late before the peer gives up on it.
    fn keep_alive_interval(&self) -> Duration {
        self.idle_timeout / 3
    }
}

/// [`TcpOptions`] refused by [`TcpOptions::validate`], and so by [`TcpTransport::start_with`]
/// (inside an [`io::Error`] of kind [`InvalidInput`](io::ErrorKind::InvalidInput)). Each
/// names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TcpOptionsError {
    /// A size, queue or connection limit of zero, or outside what the transport can hold.
    #[error("TcpOptions::{field} is {value}; it must be within {min}..={max}")]
    LimitOutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: usize,
        /// The smallest value accepted.
        min: usize,
        /// The largest value accepted.
        max: usize,
    },
    /// A timeout or backoff of zero, below its floor, or above an hour.
    #[error("TcpOptions::{field} is {value:?}; it must be within {min:?}..={max:?}")]
    DurationOutOfRange {
        /// The field.
        field: &'static str,
        /// Its value.
        value: Duration,
        /// The shortest value accepted.
        min: Duration,
        /// The longest value accepted.
        max: Duration,
    },
    /// The backoff would start above its own ceiling.
    #[error(
        "TcpOptions::reconnect_backoff_min ({min:?}) is above TcpOptions::reconnect_backoff_max ({max:?})"
    )]
    InvertedBackoff {
        /// `reconnect_backoff_min`.
        min: Duration,
        /// `reconnect_backoff_max`.
        max: Duration,
    },
}

impl TcpOptionsError {
    /// The field refused (for [`InvertedBackoff`](Self::InvertedBackoff),
    /// `reconnect_backoff_min`, the one that starts above the other).
    pub fn field(&self) -> &'static str {
        match self {
            TcpOptionsError::LimitOutOfRange { field, .. }
            | TcpOptionsError::DurationOutOfRange { field, .. } => field,
            TcpOptionsError::InvertedBackoff { .. } => "reconnect_backoff_min",
        }
    }
}

impl Default for TcpOptions {
    fn default() -> TcpOptions {
        TcpOptions {
            max_frame_bytes: 64 << 20,
            outbound_queue: 4096,
            inbound_queue: 8192,
            max_inbound_connections: 1024,
            handshake_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            max_pending_handshakes: 64,
            tls: None,
        }
    }
}

/// Counters of what a [`TcpTransport`] did, as [`TcpHandle::stats`] reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TcpStats {
    /// Messages written to peers (an AppendEntries sent as several frames counts once). Every
    /// message handed to the transport is counted once, here or in `messages_dropped`.
    pub frames_sent: u64,
    /// Frames received from peers and handed to the node.
    pub frames_received: u64,
    /// Messages dropped: a full queue, a peer not in the address book or not connected, a
    /// message too large for a frame that cannot be split, or a batch whose write failed.
    pub messages_dropped: u64,
    /// Outbound connections established.
    pub connections_opened: u64,
    /// Outbound connects or writes that failed, and outbound connections the peer closed
    /// (each followed by a reconnect).
    pub connection_failures: u64,
    /// Inbound connections accepted after a valid handshake.
    pub connections_accepted: u64,
    /// Inbound connections closed for a bad, late or unknown handshake, or over the limit
    /// (identity refusals included).
    pub connections_rejected: u64,
    /// Inbound connections refused for the identity their handshake carries: a peer of
    /// another cluster, a peer that came back with another incarnation (its data was lost or
    /// replaced), or a peer that knows this node by another incarnation (this node's data
    /// was). See [`crate::identity`].
    pub refused_identity: u64,
    /// Inbound connections closed for a frame over the size limit.
    pub oversized_frames: u64,
    /// Inbound connections closed for a frame that did not decode, or that named another
    /// sender than the handshake.
    pub malformed_frames: u64,
    /// Inbound connections closed while still in their handshake, to make room for a newer
    /// one once [`TcpOptions::max_pending_handshakes`] were (also counted in
    /// `connections_rejected`).
    pub handshakes_evicted: u64,
    /// Inbound connections refused for speaking plaintext to a TLS node, or TLS to a
    /// plaintext node (also counted in `connections_rejected`).
    pub refused_transport_mismatch: u64,
    /// Inbound connections whose TLS handshake failed: no client certificate, or one that
    /// does not chain to the CA, is not valid now, or does not name exactly one node id; or
    /// a TLS handshake that failed otherwise (also counted in `connections_rejected`).
    pub refused_tls_handshakes: u64,
    /// Inbound connections whose yggr handshake claims another node id than their client
    /// certificate names (also counted in `connections_rejected`).
    pub refused_certificate_mismatch: u64,
    /// Outbound connects refused because the peer's server certificate does not chain to the
    /// CA, is not valid now, or does not name the node this one meant to reach (also counted
    /// in `connection_failures`).
    pub refused_server_certificates: u64,
}

#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    frames_received: AtomicU64,
    messages_dropped: AtomicU64,
    connections_opened: AtomicU64,
    connection_failures: AtomicU64,
    connections_accepted: AtomicU64,
    connections_rejected: AtomicU64,
    refused_identity: AtomicU64,
    oversized_frames: AtomicU64,
    malformed_frames: AtomicU64,
    handshakes_evicted: AtomicU64,
    refused_transport_mismatch: AtomicU64,
    refused_tls_handshakes: AtomicU64,
    refused_certificate_mismatch: AtomicU64,
    refused_server_certificates: AtomicU64,
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// What the transport's tasks share.
#[derive(Debug)]
struct Shared {
    id: NodeId,
    options: TcpOptions,
    book: RwLock<HashMap<NodeId, SocketAddr>>,
    counters: Counters,
    /// This node's identity, as [`Transport::set_identity`] gave it (all unknown until then);
    /// a node that founded nothing takes the cluster id of the first peer it accepts.
    identity: RwLock<NodeIdentity>,
    /// The incarnation accepted from each peer, learned from its handshakes. Kept in memory
    /// only: a restart of this node forgets them, and [`TcpHandle::remove_peer`] forgets one.
    incarnations: Mutex<HashMap<NodeId, u64>>,
    /// When a refusal of each kind was last logged at warn, per peer.
    refusals_logged: Mutex<HashMap<(NodeId, RefusalKind), tokio::time::Instant>>,
    /// When a connection claiming an id outside the address book was last logged at warn.
    /// One for all claimed ids: they come from unauthenticated bytes, so a map keyed by them
    /// would grow without bound.
    outside_book_logged: Mutex<Option<tokio::time::Instant>>,
    /// When an inbound connection refused before its sender was authenticated (its TLS
    /// handshake, or a transport mismatch) was last logged at warn, per kind. Keyed by kind
    /// only, for the same reason.
    unauthenticated_refusals_logged: Mutex<HashMap<&'static str, tokio::time::Instant>>,
    /// The TLS material new connections use, `None` for a plaintext transport (which stays
    /// one); replaced by [`TcpHandle::set_tls`].
    tls: Option<RwLock<TlsConfig>>,
}

/// Whether a warning last given at `last` (if ever) is due again at `now`.
fn warning_due(last: Option<tokio::time::Instant>, now: tokio::time::Instant) -> bool {
    last.is_none_or(|last| now.duration_since(last) >= REFUSAL_LOG_INTERVAL)
}

/// Why a handshake's identity was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Refusal {
    /// The peer's cluster id differs from this node's.
    OtherCluster { theirs: u64, ours: u64 },
    /// The peer's incarnation differs from the one accepted from it before.
    PeerReincarnated { theirs: u64, known: u64 },
    /// The peer knows this node by another incarnation than its own.
    ThisNodeReincarnated { theirs: u64, ours: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RefusalKind {
    OtherCluster,
    PeerReincarnated,
    ThisNodeReincarnated,
}

/// How often each refusal is logged at warn, per peer and kind; the others go at debug.
/// A refused peer reconnects every few seconds at most, so this keeps the log readable.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl Refusal {
    fn kind(self) -> RefusalKind {
        match self {
            Refusal::OtherCluster { .. } => RefusalKind::OtherCluster,
            Refusal::PeerReincarnated { .. } => RefusalKind::PeerReincarnated,
            Refusal::ThisNodeReincarnated { .. } => RefusalKind::ThisNodeReincarnated,
        }
    }

    /// What the operator reads: what is wrong and what to do.
    fn explain(self, peer: NodeId) -> String {
        let peer = peer.get();
        match self {
            Refusal::OtherCluster { theirs, ours } => format!(
                "refusing peer {peer}: it belongs to another cluster (its cluster id \
                 {theirs:016x}, this node's {ours:016x}); check the peer addresses"
            ),
            Refusal::PeerReincarnated { theirs, known } => format!(
                "refusing peer {peer}: it came back with another data directory (incarnation \
                 {theirs:016x}, known as {known:016x}): its data was lost or replaced. Remove \
                 it from the cluster, start it over a fresh directory with Bootstrap::Join, and \
                 add it again"
            ),
            Refusal::ThisNodeReincarnated { theirs, ours } => format!(
                "refusing peer {peer}: it knows this node by another incarnation \
                 ({theirs:016x}; this node's is {ours:016x}): this node's data was lost or \
                 replaced, and it must not come back as a founder. Have it removed from the \
                 cluster, then start it over a fresh directory with Bootstrap::Join and add it \
                 again"
            ),
        }
    }
}

impl Shared {
    fn new(id: NodeId, options: TcpOptions, book: HashMap<NodeId, SocketAddr>) -> Shared {
        let tls = options.tls.clone().map(RwLock::new);
        Shared {
            id,
            options,
            book: RwLock::new(book),
            counters: Counters::default(),
            identity: RwLock::new(NodeIdentity::default()),
            incarnations: Mutex::new(HashMap::new()),
            refusals_logged: Mutex::new(HashMap::new()),
            outside_book_logged: Mutex::new(None),
            unauthenticated_refusals_logged: Mutex::new(HashMap::new()),
            tls,
        }
    }

    /// The TLS material for a new connection, if this transport speaks TLS.
    fn tls(&self) -> Option<TlsConfig> {
        self.tls.as_ref().map(|tls| {
            tls.read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone()
        })
    }

    /// Logs the refusal of an inbound connection from `address` whose sender is not
    /// authenticated: at warn the first time in [`REFUSAL_LOG_INTERVAL`] for this `kind`, at
    /// debug otherwise (a misconfigured peer retries every few seconds).
    fn refused_unauthenticated(&self, kind: &'static str, address: SocketAddr, message: &str) {
        let now = tokio::time::Instant::now();
        let warn_now = {
            let mut logged = self
                .unauthenticated_refusals_logged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = warning_due(logged.get(kind).copied(), now);
            if due {
                logged.insert(kind, now);
            }
            due
        };
        if warn_now {
            tracing::warn!(target: "yggr::node", %address, "{message}");
        } else {
            tracing::debug!(target: "yggr::node", %address, "{message}");
        }
    }

    fn identity(&self) -> NodeIdentity {
        *self
            .identity
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The handshake this node sends to `peer`.
    fn handshake_for(&self, peer: NodeId) -> Handshake {
        let identity = self.identity();
        let known = self
            .incarnations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&peer)
            .copied();
        Handshake {
            sender: self.id,
            cluster_id: identity.cluster_id,
            incarnation: identity.incarnation,
            receiver_incarnation: known.unwrap_or(0),
        }
    }

    /// Whether what `handshake` says about the sender's cluster and about this node agrees
    /// with this node's identity. Checked at the handshake and again while the connection
    /// lives, since the identity may be set after it was accepted.
    fn check_against_self(&self, handshake: &Handshake) -> Result<(), Refusal> {
        let ours = self.identity();
        if handshake.cluster_id != 0
            && ours.cluster_id != 0
            && handshake.cluster_id != ours.cluster_id
        {
            return Err(Refusal::OtherCluster {
                theirs: handshake.cluster_id,
                ours: ours.cluster_id,
            });
        }
        if handshake.receiver_incarnation != 0
            && ours.incarnation != 0
            && handshake.receiver_incarnation != ours.incarnation
        {
            return Err(Refusal::ThisNodeReincarnated {
                theirs: handshake.receiver_incarnation,
                ours: ours.incarnation,
            });
        }
        Ok(())
    }

    /// Checks `handshake`'s identities; on success records the sender's incarnation and, for
    /// a node that founded nothing, adopts the sender's cluster id.
    fn admit(&self, handshake: &Handshake) -> Result<(), Refusal> {
        self.check_against_self(handshake)?;
        let mut incarnations = self
            .incarnations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if handshake.incarnation != 0 {
            match incarnations.get(&handshake.sender) {
                Some(&known) if known != handshake.incarnation => {
                    return Err(Refusal::PeerReincarnated {
                        theirs: handshake.incarnation,
                        known,
                    });
                }
                Some(_) => {}
                None => {
                    incarnations.insert(handshake.sender, handshake.incarnation);
                }
            }
        }
        drop(incarnations);
        if handshake.cluster_id != 0 {
            let mut identity = self
                .identity
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if identity.cluster_id == 0 {
                identity.cluster_id = handshake.cluster_id;
            }
        }
        Ok(())
    }

    /// Counts `refusal` of `peer`'s connection and logs it: at warn the first time in
    /// [`REFUSAL_LOG_INTERVAL`] for this peer and kind, at debug otherwise.
    fn refused(&self, peer: NodeId, address: SocketAddr, refusal: Refusal) {
        bump(&self.counters.refused_identity, 1);
        bump(&self.counters.connections_rejected, 1);
        let now = tokio::time::Instant::now();
        let warn_now = {
            let mut logged = self
                .refusals_logged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = warning_due(logged.get(&(peer, refusal.kind())).copied(), now);
            if due {
                logged.insert((peer, refusal.kind()), now);
            }
            due
        };
        let explanation = refusal.explain(peer);
        if warn_now {
            tracing::warn!(target: "yggr::node", peer = peer.get(), %address, "{explanation}");
        } else {
            tracing::debug!(target: "yggr::node", peer = peer.get(), %address, "{explanation}");
        }
    }

    /// Logs the refusal of a connection whose handshake claims `claimed`, a node outside the
    /// address book: at warn the first time in [`REFUSAL_LOG_INTERVAL`], at debug otherwise
    /// (a removed node that is still running reconnects every few seconds).
    fn refused_outside_book(&self, claimed: NodeId, address: SocketAddr) {
        let now = tokio::time::Instant::now();
        let warn_now = {
            let mut last = self
                .outside_book_logged
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            let due = warning_due(*last, now);
            if due {
                *last = Some(now);
            }
            due
        };
        let message = "refusing a connection from a node outside the address book";
        if warn_now {
            tracing::warn!(target: "yggr::node", claimed = claimed.get(), %address, "{message}");
        } else {
            tracing::debug!(target: "yggr::node", claimed = claimed.get(), %address, "{message}");
        }
    }

    fn address(&self, peer: NodeId) -> Option<SocketAddr> {
        self.book
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&peer)
            .copied()
    }
}

/// Warns when this node's own certificate is expired or not yet valid: every peer will refuse
/// it until it is replaced (or the clock is set right).
fn warn_if_out_of_validity(tls: &TlsConfig) {
    if tls.expired_or_not_yet_valid() {
        tracing::warn!(target: "yggr::node", "this node's TLS certificate is expired or not yet valid: peers will refuse it until it is replaced (TcpHandle::reload_tls)");
    }
}

/// A cheap, cloneable handle on a running [`TcpTransport`]: its address book and counters,
/// usable after the transport itself was handed to a `Node`.
#[derive(Clone, Debug)]
pub struct TcpHandle {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

impl TcpHandle {
    /// Adds or updates the address of `peer`. Messages to it flow from the next send.
    pub fn add_peer(&self, peer: NodeId, address: SocketAddr) {
        self.shared
            .book
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(peer, address);
    }

    /// Removes `peer`: nothing more is sent to it, and its connections are refused. The
    /// incarnation accepted from it is forgotten too, so a node with that id started later
    /// over fresh storage (one that lost its data and joins again) is accepted once it is
    /// added back.
    pub fn remove_peer(&self, peer: NodeId) {
        self.shared
            .book
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&peer);
        self.shared
            .incarnations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(&peer);
    }

    /// This node's identity as its peers see it: the one [`Transport::set_identity`] gave,
    /// with the cluster id a node that founded nothing learned from its peers.
    pub fn identity(&self) -> NodeIdentity {
        self.shared.identity()
    }

    /// The address book.
    pub fn peers(&self) -> HashMap<NodeId, SocketAddr> {
        self.shared
            .book
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The address this node listens on (with the port the OS picked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Makes new connections, both ways, use `config`: this node's certificate and key, and
    /// the CA its peers must chain to. Connections already open keep going until they close
    /// (a certificate is checked when a connection is made, not while it lives); those made
    /// after use the new material.
    ///
    /// # Errors
    /// [`TlsError::NotEnabled`] for a transport started without TLS, and
    /// [`TlsError::WrongNode`] for a certificate that names another node; the material in
    /// use then stays.
    pub fn set_tls(&self, config: TlsConfig) -> Result<(), TlsError> {
        let Some(tls) = &self.shared.tls else {
            return Err(TlsError::NotEnabled);
        };
        if config.node_id() != self.shared.id {
            return Err(TlsError::WrongNode {
                certificate: config.node_id(),
                node: self.shared.id,
            });
        }
        warn_if_out_of_validity(&config);
        *tls.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        tracing::info!(target: "yggr::node", "new TLS material in use for new connections");
        Ok(())
    }

    /// Reads again the files the TLS material in use was read from
    /// ([`TlsConfig::from_pem_files`]) and uses them for new connections, as
    /// [`set_tls`](Self::set_tls) does: how certificates are rotated without a restart.
    ///
    /// # Errors
    /// [`TlsError::NotEnabled`] for a transport started without TLS,
    /// [`TlsError::NotFromFiles`] for material given as bytes, and any error of reading
    /// them ([`TlsConfig::from_pem_files`]) or of [`set_tls`](Self::set_tls); the material
    /// in use then stays.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        let current = self.shared.tls().ok_or(TlsError::NotEnabled)?;
        self.set_tls(current.reload()?)
    }

    /// What the transport has done so far.
    pub fn stats(&self) -> TcpStats {
        let counters = &self.shared.counters;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        TcpStats {
            frames_sent: read(&counters.frames_sent),
            frames_received: read(&counters.frames_received),
            messages_dropped: read(&counters.messages_dropped),
            connections_opened: read(&counters.connections_opened),
            connection_failures: read(&counters.connection_failures),
            connections_accepted: read(&counters.connections_accepted),
            connections_rejected: read(&counters.connections_rejected),
            refused_identity: read(&counters.refused_identity),
            oversized_frames: read(&counters.oversized_frames),
            malformed_frames: read(&counters.malformed_frames),
            handshakes_evicted: read(&counters.handshakes_evicted),
            refused_transport_mismatch: read(&counters.refused_transport_mismatch),
            refused_tls_handshakes: read(&counters.refused_tls_handshakes),
            refused_certificate_mismatch: read(&counters.refused_certificate_mismatch),
            refused_server_certificates: read(&counters.refused_server_certificates),
        }
    }
}

/// A [`Transport`] over TCP. See the [module documentation](self) for the design.
///
/// ```no_run
/// # async fn example() -> std::io::Result<()> {
/// use yggr::{NodeId, TcpTransport};
/// let me = NodeId::new(1).unwrap();
/// let peers = [
///     (NodeId::new(2).unwrap(), "10.0.0.2:7000".parse().unwrap()),
///     (NodeId::new(3).unwrap(), "10.0.0.3:7000".parse().unwrap()),
/// ];
/// let transport = TcpTransport::start(me, "0.0.0.0:7000".parse().unwrap(), peers).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TcpTransport {
    handle: TcpHandle,
    inbound: mpsc::Receiver<Message<Bytes>>,
    /// Each connected peer's writer queue. A `BTreeMap`: dropping the transport closes the
    /// queues in this map's order, and each writer then closes its connection, so the order
    /// must be the same in every run of a simulation.
    writers: BTreeMap<NodeId, mpsc::Sender<Message<Bytes>>>,
    /// The acceptor and the writers; dropping the transport stops them all.
    tasks: JoinSet<()>,
}

impl TcpTransport {
    /// Listens on `listen` and knows `peers` by address (an entry for `node_id` itself is
    /// ignored, so the same list of every member can be given to each node). Connections to
    /// peers are made on the first message to each.
    ///
    /// # Errors
    /// When `listen` cannot be bound (the error names the address).
    pub async fn start(
        node_id: NodeId,
        listen: SocketAddr,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
    ) -> io::Result<TcpTransport> {
        TcpTransport::start_with(node_id, listen, peers, TcpOptions::default()).await
    }

    /// [`start`](Self::start) with other limits and timings.
    ///
    /// # Errors
    /// When `options` are out of range ([`TcpOptions::validate`]): an error of kind
    /// [`InvalidInput`](io::ErrorKind::InvalidInput) holding the [`TcpOptionsError`], which
    /// names the field. When the certificate of [`TcpOptions::tls`] names another node than
    /// `node_id`: the same kind, holding [`TlsError::WrongNode`]. When `listen` cannot be
    /// bound (the error names the address).
    pub async fn start_with(
        node_id: NodeId,
        listen: SocketAddr,
        peers: impl IntoIterator<Item = (NodeId, SocketAddr)>,
        options: TcpOptions,
    ) -> io::Result<TcpTransport> {
        options
            .validate()
            .map_err(|error| io::Error::new(io::ErrorKind::InvalidInput, error))?;
        if let Some(tls) = &options.tls
            && tls.node_id() != node_id
        {
            let error = TlsError::WrongNode {
                certificate: tls.node_id(),
                node: node_id,
            };
            return Err(io::Error::new(io::ErrorKind::InvalidInput, error));
        }
        if let Some(tls) = &options.tls {
            warn_if_out_of_validity(tls);
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|error| io::Error::new(error.kind(), format!("binding {listen}: {error}")))?;
        let local_addr = listener.local_addr()?;
        let inbound_queue = options.inbound_queue;
        let book = peers.into_iter().filter(|(id, _)| *id != node_id).collect();
        let shared = Arc::new(Shared::new(node_id, options, book));
        let (sender, inbound) = mpsc::channel(inbound_queue);
        let mut tasks = JoinSet::new();
        tasks.spawn(scoped(inbound::accept(shared.clone(), listener, sender)));
        Ok(TcpTransport {
            handle: TcpHandle { shared, local_addr },
            inbound,
            writers: BTreeMap::new(),
            tasks,
        })
    }

    /// A handle on the address book and counters, which outlives handing the transport to a
    /// node.
    pub fn handle(&self) -> TcpHandle {
        self.handle.clone()
    }

    /// The address this node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr
    }

    fn dropped(&self) {
        bump(&self.handle.shared.counters.messages_dropped, 1);
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, to: NodeId, message: Message<Bytes>) {
        if let Some(writer) = self.writers.get(&to) {
            match writer.try_send(message) {
                Ok(()) => return,
                Err(mpsc::error::TrySendError::Full(_)) => return self.dropped(),
                // The writer stopped (its peer left the address book): start over below.
                Err(mpsc::error::TrySendError::Closed(returned)) => {
                    self.writers.remove(&to);
                    return self.send(to, returned);
                }
            }
        }
        let shared = &self.handle.shared;
        if to == shared.id || shared.address(to).is_none() {
            return self.dropped();
        }
        // Reap writers that stopped, so the set does not grow with peers that came and went.
        while self.tasks.try_join_next().is_some() {}
        let (queue, receiver) = mpsc::channel(shared.options.outbound_queue);
        let _ = queue.try_send(message);
        self.tasks.spawn(scoped(outbound::write_to_peer(
            shared.clone(),
            to,
            receiver,
        )));
        self.writers.insert(to, queue);
    }

    /// Sends `identity` in every later handshake and checks peers' handshakes against it.
    /// A cluster id of 0 (a node that founded nothing) keeps one already learned from a
    /// peer.
    ///
    /// Messages already received were accepted before there was anything to check them
    /// against: they are discarded (Raft sends again what matters), and connections accepted
    /// before are checked again on their next read.
    fn set_identity(&mut self, identity: NodeIdentity) {
        {
            let mut current = self
                .handle
                .shared
                .identity
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            current.incarnation = identity.incarnation;
            if identity.cluster_id != 0 {
                current.cluster_id = identity.cluster_id;
            }
        }
        let mut discarded = 0usize;
        while self.inbound.try_recv().is_ok() {
            discarded += 1;
        }
        if discarded > 0 {
            tracing::debug!(target: "yggr::node", discarded, "discarded messages received before this node's identity was known");
        }
    }

    async fn recv(&mut self) -> Option<Message<Bytes>> {
        self.inbound.recv().await
    }

    fn try_recv(&mut self) -> Option<Message<Bytes>> {
        self.inbound.try_recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer refused every few seconds must not fill the log: the first refusal is a
    /// warning, repeats within the interval are not, and the next one after it is again.
    #[test]
    fn a_repeated_refusal_is_warned_about_once_per_interval() {
        let start = tokio::time::Instant::now();
        assert!(
            warning_due(None, start),
            "the first refusal is warned about"
        );
        let soon = start + Duration::from_secs(2);
        assert!(!warning_due(Some(start), soon));
        let later = start + REFUSAL_LOG_INTERVAL;
        assert!(warning_due(Some(start), later));
    }
}
