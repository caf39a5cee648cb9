//! The acceptor and one reader task per inbound connection. Every byte a peer sends is
//! untrusted: anything wrong closes that connection alone, and is counted.
//!
//! A connection holds one of [`TcpOptions::max_inbound_connections`] slots from the moment it
//! is accepted, and, until its handshake is done, one of
//! [`TcpOptions::max_pending_handshakes`] places: the oldest connection still in its
//! handshake is closed when a new one needs a place. The handshake timeout covers the whole
//! of it, the TLS handshake included, so no TLS work is spent on a connection that holds no
//! slot, and none for longer than the timeout.
//!
//! [`TcpOptions::max_inbound_connections`]: super::TcpOptions::max_inbound_connections
//! [`TcpOptions::max_pending_handshakes`]: super::TcpOptions::max_pending_handshakes

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, warn};
use yggr_core::Message;

use super::frame::{
    FrameError, HANDSHAKE_IDENTITY_BYTES, HANDSHAKE_PREFIX_BYTES, Handshake, Prefix, decode_frame,
    decode_handshake_prefix, handshake_with,
};
use super::tls::{
    TLS_HANDSHAKE_RECORD, TlsConfig, describe_certificate_error, node_id_of, rustls_error,
};
use super::{Shared, bump};
use crate::sys::net::{TcpListener, TcpStream};
use crate::sys::task::scoped;

/// Accepts connections until the transport is dropped (which aborts this task and, with its
/// `JoinSet`, every reader).
pub(super) async fn accept(
    shared: Arc<Shared>,
    listener: TcpListener,
    inbound: mpsc::Sender<Message<Bytes>>,
) {
    let slots = Arc::new(Semaphore::new(shared.options.max_inbound_connections));
    // One sender per connection still in its handshake, oldest first: sending on it closes
    // that connection. Its reader drops the receiver once the handshake is over.
    let mut pending: VecDeque<oneshot::Sender<()>> = VecDeque::new();
    let mut readers = JoinSet::new();
    loop {
        // Biased, so that a simulated run polls the branches in one order every time.
        tokio::select! {
            biased;
            accepted = listener.accept() => match accepted {
                Ok((stream, from)) => {
                    make_room(shared.options.max_pending_handshakes, &mut pending);
                    match slots.clone().try_acquire_owned() {
                        Ok(slot) => {
                            let (evict, evicted) = oneshot::channel();
                            pending.push_back(evict);
                            let connection = Inbound { stream, from, slot, evicted };
                            readers.spawn(scoped(read_from(shared.clone(), connection, inbound.clone())));
                        }
                        Err(_) => bump(&shared.counters.connections_rejected, 1),
                    }
                }
                Err(error) => {
                    // Out of file descriptors, say: wait a little rather than spin.
                    warn!(target: "yggr::node", %error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = readers.join_next() => {}
        }
    }
}

/// Forgets the connections whose handshake is over, then closes the oldest still in theirs
/// until there is a place for one more.
fn make_room(limit: usize, pending: &mut VecDeque<oneshot::Sender<()>>) {
    pending.retain(|evict| !evict.is_closed());
    while pending.len() >= limit {
        let Some(oldest) = pending.pop_front() else {
            break;
        };
        // Refused only if its handshake ended meanwhile: then it needs no closing.
        let _ = oldest.send(());
    }
}

/// An accepted connection, before its handshake.
struct Inbound {
    stream: TcpStream,
    from: SocketAddr,
    /// One of `max_inbound_connections`, held until the connection closes.
    slot: OwnedSemaphorePermit,
    /// Fires when the acceptor needs this connection's place among those in their handshake.
    evicted: oneshot::Receiver<()>,
}

/// Reads one connection: the handshake, then frames until it closes or misbehaves.
async fn read_from(
    shared: Arc<Shared>,
    connection: Inbound,
    inbound: mpsc::Sender<Message<Bytes>>,
) {
    let Inbound {
        stream,
        from,
        slot: _slot,
        evicted,
    } = connection;
    let counters = &shared.counters;
    let _ = stream.set_nodelay(true);
    let admitted = tokio::select! {
        biased;
        Ok(()) = evicted => {
            debug!(target: "yggr::node", %from, "closing a connection still in its handshake to make room for a newer one");
            bump(&counters.handshakes_evicted, 1);
            bump(&counters.connections_rejected, 1);
            return;
        }
        admitted = timeout(shared.options.handshake_timeout, admit(&shared, stream, from)) => admitted,
    };
    // The receiver is dropped: the acceptor counts this connection out of those in their
    // handshake.
    let admission = admitted.unwrap_or_else(|_| {
        debug!(target: "yggr::node", %from, "no handshake in time; closing");
        Admission::Refused
    });
    match admission {
        Admission::Accepted(Link::Plain(stream), handshake) => {
            serve(&shared, stream, from, handshake, &inbound).await;
        }
        Admission::Accepted(Link::Tls(stream), handshake) => {
            serve(&shared, *stream, from, handshake, &inbound).await;
        }
        Admission::Refused => bump(&counters.connections_rejected, 1),
        // Counted (and logged) where refused.
        Admission::RefusedCounted => {}
    }
}

/// Reads frames from a connection whose handshake was accepted, until it closes or
/// misbehaves.
async fn serve<S: AsyncRead + Unpin>(
    shared: &Shared,
    mut stream: S,
    from: SocketAddr,
    handshake: Handshake,
    inbound: &mpsc::Sender<Message<Bytes>>,
) {
    let counters = &shared.counters;
    let sender = handshake.sender;
    bump(&counters.connections_accepted, 1);
    let limit = shared.options.max_frame_bytes;
    let mut buffer = BytesMut::with_capacity(64 << 10);
    loop {
        loop {
            match decode_frame(&mut buffer, limit) {
                Ok(Some(message)) => {
                    if message.from != sender {
                        warn!(target: "yggr::node", peer = sender.get(), claimed = message.from.get(), "closing a connection whose messages claim another sender");
                        bump(&counters.malformed_frames, 1);
                        return;
                    }
                    bump(&counters.frames_received, 1);
                    if inbound.send(message).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    warn!(target: "yggr::node", peer = sender.get(), %error, "closing a connection");
                    match error {
                        FrameError::Oversized { .. } => bump(&counters.oversized_frames, 1),
                        _ => bump(&counters.malformed_frames, 1),
                    }
                    return;
                }
            }
        }
        // Any bytes count, keep-alives included: a live writer sends one after a third of the
        // idle timeout, so only a peer that is gone (or not a yggr writer) stays quiet this long.
        match timeout(shared.options.idle_timeout, stream.read_buf(&mut buffer)).await {
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(_)) => {}
            Err(_) => {
                debug!(target: "yggr::node", peer = sender.get(), "closing an idle connection");
                return;
            }
        }
        // A peer taken out of the address book is cut off, connections already open included.
        if shared.address(sender).is_none() {
            debug!(target: "yggr::node", peer = sender.get(), "closing the connection of a peer no longer in the address book");
            return;
        }
        // This node's identity may have been set after the connection was accepted (the
        // transport listens before the node has loaded its storage): check it again.
        if let Err(refusal) = shared.check_against_self(&handshake) {
            shared.refused(sender, from, refusal);
            return;
        }
    }
}

/// An accepted connection's stream, plaintext or TLS.
enum Link {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// What became of a connection's handshake.
enum Admission {
    Accepted(Link, Handshake),
    /// Bad, late, or from a node outside the address book.
    Refused,
    /// Refused, and already counted and logged: an identity that does not match, a transport
    /// mismatch, a TLS handshake that failed, a certificate naming another node.
    RefusedCounted,
}

/// Reads a handshake (version 1 or 2).
async fn read_handshake<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::io::Result<Result<Handshake, FrameError>> {
    let mut prefix = [0; HANDSHAKE_PREFIX_BYTES];
    stream.read_exact(&mut prefix).await?;
    let sender = match decode_handshake_prefix(&prefix) {
        Ok(Prefix::WithoutIdentity(sender)) => return Ok(Ok(handshake_with(sender, None))),
        Ok(Prefix::WithIdentity(sender)) => sender,
        Err(error) => return Ok(Err(error)),
    };
    let mut identity = [0; HANDSHAKE_IDENTITY_BYTES];
    stream.read_exact(&mut identity).await?;
    Ok(Ok(handshake_with(sender, Some(&identity))))
}

/// The connection's TLS handshake, if this node speaks TLS, and its yggr handshake, if valid,
/// from a node in the address book (the one its certificate names), and with an identity
/// that matches. The caller bounds it with the handshake timeout.
async fn admit(shared: &Shared, stream: TcpStream, from: SocketAddr) -> Admission {
    let (mut link, certified) = match shared.tls() {
        None => (Link::Plain(stream), None),
        Some(tls) => match accept_tls(shared, stream, from, &tls).await {
            Ok((stream, certified)) => (Link::Tls(Box::new(stream)), Some(certified)),
            Err(admission) => return admission,
        },
    };
    let read = match &mut link {
        Link::Plain(stream) => read_handshake(stream).await,
        Link::Tls(stream) => read_handshake(stream).await,
    };
    let handshake = match read {
        Ok(Ok(handshake)) => handshake,
        Ok(Err(FrameError::UnexpectedTls)) => {
            bump(&shared.counters.refused_transport_mismatch, 1);
            bump(&shared.counters.connections_rejected, 1);
            let message = "refusing a TLS connection: this node is not configured for TLS \
                           (every node of a cluster must agree on TcpOptions::tls)";
            shared.refused_unauthenticated("unexpected TLS", from, message);
            return Admission::RefusedCounted;
        }
        Ok(Err(error)) => {
            warn!(target: "yggr::node", %from, %error, "refusing a connection");
            return Admission::Refused;
        }
        Err(error) => {
            debug!(target: "yggr::node", %from, %error, "connection closed before its handshake");
            return Admission::Refused;
        }
    };
    if let Some(certified) = certified
        && certified != handshake.sender
    {
        bump(&shared.counters.refused_certificate_mismatch, 1);
        bump(&shared.counters.connections_rejected, 1);
        let message = format!(
            "refusing a connection whose handshake claims node {} but whose certificate names \
             node {certified}",
            handshake.sender
        );
        shared.refused_unauthenticated("certificate mismatch", from, &message);
        return Admission::RefusedCounted;
    }
    if shared.address(handshake.sender).is_none() {
        shared.refused_outside_book(handshake.sender, from);
        return Admission::Refused;
    }
    match shared.admit(&handshake) {
        Ok(()) => Admission::Accepted(link, handshake),
        Err(refusal) => {
            shared.refused(handshake.sender, from, refusal);
            Admission::RefusedCounted
        }
    }
}

/// The server side of a TLS handshake, and the node id the client's certificate names; a
/// connection that does not start one (a plaintext peer), or whose handshake fails, is
/// counted and logged.
async fn accept_tls(
    shared: &Shared,
    mut stream: TcpStream,
    from: SocketAddr,
    tls: &TlsConfig,
) -> Result<
    (
        tokio_rustls::server::TlsStream<TcpStream>,
        yggr_core::NodeId,
    ),
    Admission,
> {
    let counters = &shared.counters;
    // Look before spending anything on it: a plaintext peer is told apart by its first byte.
    let mut first = [0u8; 1];
    match stream.peek(&mut first).await {
        Ok(1..) => {}
        Ok(0) | Err(_) => {
            debug!(target: "yggr::node", %from, "connection closed before its handshake");
            return Err(Admission::Refused);
        }
    }
    if first[0] != TLS_HANDSHAKE_RECORD {
        bump(&counters.refused_transport_mismatch, 1);
        bump(&counters.connections_rejected, 1);
        let message = if first[0] == b'Y' {
            "refusing a plaintext yggr connection: this node requires TLS (every node of a \
             cluster must agree on TcpOptions::tls)"
        } else {
            "refusing a connection that does not start a TLS handshake: this node requires TLS"
        };
        shared.refused_unauthenticated("plaintext", from, message);
        return Err(Admission::RefusedCounted);
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server_config());
    let stream = match acceptor.accept(stream).await {
        Ok(stream) => stream,
        Err(error) => {
            bump(&counters.refused_tls_handshakes, 1);
            bump(&counters.connections_rejected, 1);
            let message = match rustls_error(&error) {
                Some(rustls::Error::InvalidCertificate(reason)) => format!(
                    "refusing a connection whose client certificate is refused: {}",
                    describe_certificate_error(reason)
                ),
                Some(rustls::Error::NoCertificatesPresented) => {
                    "refusing a connection that presents no client certificate".to_owned()
                }
                Some(rustls::Error::AlertReceived(alert)) => format!(
                    "a connection's TLS handshake failed: the connecting peer refused this \
                     node's certificate ({alert:?})"
                ),
                _ => format!("refusing a connection whose TLS handshake failed: {error}"),
            };
            shared.refused_unauthenticated("TLS handshake", from, &message);
            return Err(Admission::RefusedCounted);
        }
    };
    // The verifier required a certificate naming exactly one node id; this reads it back.
    let certified = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or_else(|| "no client certificate".to_owned())
        .and_then(|certificate| node_id_of(certificate));
    match certified {
        Ok(certified) => Ok((stream, certified)),
        Err(reason) => {
            bump(&counters.refused_tls_handshakes, 1);
            bump(&counters.connections_rejected, 1);
            let message = format!("refusing a connection: {reason}");
            shared.refused_unauthenticated("TLS handshake", from, &message);
            Err(Admission::RefusedCounted)
        }
    }
}
