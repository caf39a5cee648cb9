//! The acceptor and one reader task per inbound connection. Every byte a peer sends is
//! untrusted: anything wrong closes that connection alone, and is counted.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tracing::{debug, warn};
use yggr_core::Message;

use super::frame::{
    FrameError, HANDSHAKE_IDENTITY_BYTES, HANDSHAKE_PREFIX_BYTES, Handshake, Prefix, decode_frame,
    decode_handshake_prefix, handshake_with,
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
    let mut readers = JoinSet::new();
    loop {
        // Biased, so that a simulated run polls the branches in one order every time.
        tokio::select! {
            biased;
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        readers.spawn(scoped(read_from(shared.clone(), stream, inbound.clone(), slot)));
                    }
                    Err(_) => bump(&shared.counters.connections_rejected, 1),
                },
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

/// Reads one connection: the handshake, then frames until it closes or misbehaves.
async fn read_from(
    shared: Arc<Shared>,
    mut stream: TcpStream,
    inbound: mpsc::Sender<Message<Bytes>>,
    _slot: OwnedSemaphorePermit,
) {
    let counters = &shared.counters;
    let handshake = match handshake(&shared, &mut stream).await {
        Admission::Accepted(handshake) => handshake,
        Admission::Refused => {
            bump(&counters.connections_rejected, 1);
            return;
        }
        // Counted (and logged) by `Shared::refused`.
        Admission::RefusedIdentity => return,
    };
    let sender = handshake.sender;
    let _ = stream.set_nodelay(true);
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
            shared.refused(sender, refusal);
            return;
        }
    }
}

/// What became of a connection's handshake.
enum Admission {
    Accepted(Handshake),
    /// Bad, late, or from a node outside the address book.
    Refused,
    /// The identity it carries does not match; already counted and logged.
    RefusedIdentity,
}

/// Reads a handshake (version 1 or 2) within the handshake timeout.
async fn read_handshake(stream: &mut TcpStream) -> std::io::Result<Result<Handshake, FrameError>> {
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

/// The handshake, if valid, timely, from a node in the address book, and with an identity
/// that matches.
async fn handshake(shared: &Shared, stream: &mut TcpStream) -> Admission {
    let read = match timeout(shared.options.handshake_timeout, read_handshake(stream)).await {
        Ok(Ok(read)) => read,
        Ok(Err(error)) => {
            debug!(target: "yggr::node", %error, "connection closed before its handshake");
            return Admission::Refused;
        }
        Err(_) => {
            debug!(target: "yggr::node", "no handshake in time; closing");
            return Admission::Refused;
        }
    };
    let handshake = match read {
        Ok(handshake) => handshake,
        Err(error) => {
            warn!(target: "yggr::node", %error, "refusing a connection");
            return Admission::Refused;
        }
    };
    if shared.address(handshake.sender).is_none() {
        shared.refused_outside_book(handshake.sender);
        return Admission::Refused;
    }
    match shared.admit(&handshake) {
        Ok(()) => Admission::Accepted(handshake),
        Err(refusal) => {
            shared.refused(handshake.sender, refusal);
            Admission::RefusedIdentity
        }
    }
}
