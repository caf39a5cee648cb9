//! One writer task per peer: connect, handshake, then write whatever is queued as frames in
//! one go; on any failure, back off (with jitter) and connect again.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::timeout;
use tracing::{debug, info, warn};
use yggr_core::{Message, NodeId};

use super::frame::{encode_frames, encode_handshake};
use super::{Shared, bump};

/// The most messages written in one `write` call.
const MAX_BATCH: usize = 1024;

/// Runs until the transport is dropped or `peer` leaves the address book.
pub(super) async fn write_to_peer(
    shared: Arc<Shared>,
    peer: NodeId,
    mut queue: mpsc::Receiver<Message<Bytes>>,
) {
    let options = &shared.options;
    // Jitter from a seed of the two ids: reconnect storms spread out, and a test run
    // repeats the same schedule.
    let mut rng = ChaCha8Rng::seed_from_u64(shared.id.get() ^ peer.get().rotate_left(32));
    let mut backoff = options.reconnect_backoff_min;
    // Whether the last attempt to connect failed.
    let mut failing = false;
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut buffer = BytesMut::with_capacity(64 << 10);
    loop {
        let Some(address) = shared.address(peer) else {
            return;
        };
        let connected = timeout(options.io_timeout, connect(&shared, address)).await;
        let mut stream = match connected {
            Ok(Ok(stream)) => stream,
            failed => {
                let error = match failed {
                    Ok(Err(error)) => error.to_string(),
                    _ => format!("no answer within {:?}", options.io_timeout),
                };
                // The first failure of a streak is worth an operator's eye (a wrong address
                // looks like this, and nothing else would say so); the retries are not.
                if failing {
                    debug!(target: "yggr::node", peer = peer.get(), %address, %error, "connect failed again");
                } else {
                    warn!(target: "yggr::node", peer = peer.get(), %address, %error, "cannot connect to peer; retrying with backoff");
                    failing = true;
                }
                bump(&shared.counters.connection_failures, 1);
                // What was queued meanwhile would be stale by the time it arrived.
                let mut stale = batch.len() as u64;
                batch.clear();
                while queue.try_recv().is_ok() {
                    stale += 1;
                }
                bump(&shared.counters.messages_dropped, stale);
                let jitter = rng.random_range(0.5..1.5);
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = (backoff * 2).min(options.reconnect_backoff_max);
                if queue.is_closed() {
                    return;
                }
                continue;
            }
        };
        bump(&shared.counters.connections_opened, 1);
        if failing {
            info!(target: "yggr::node", peer = peer.get(), %address, "connected to peer");
            failing = false;
        }
        backoff = options.reconnect_backoff_min;
        loop {
            // A batch carried over from a connection to a peer's old address goes first.
            if batch.is_empty() && queue.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
            let received = batch.len();
            // The address book may have changed since the connection was made: a removed
            // peer gets nothing more, a moved one gets this batch over a new connection.
            match shared.address(peer) {
                None => {
                    bump(&shared.counters.messages_dropped, received as u64);
                    return;
                }
                Some(current) if current != address => break,
                Some(_) => {}
            }
            buffer.clear();
            // Messages whose frames are in the buffer: sent or dropped together below.
            let mut encoded = 0u64;
            for message in batch.drain(..) {
                match encode_frames(&message, options.max_frame_bytes, &mut buffer) {
                    Ok(_frames) => encoded += 1,
                    Err(bytes) => {
                        // The peer would refuse it and close the connection: never send it.
                        warn!(target: "yggr::node", peer = peer.get(), bytes, limit = options.max_frame_bytes, kind = message.rpc.kind(), "dropping a message larger than the frame limit");
                        bump(&shared.counters.messages_dropped, 1);
                    }
                }
            }
            match timeout(options.io_timeout, stream.write_all(&buffer)).await {
                Ok(Ok(())) => bump(&shared.counters.frames_sent, encoded),
                _ => {
                    debug!(target: "yggr::node", peer = peer.get(), "connection lost; reconnecting");
                    bump(&shared.counters.connection_failures, 1);
                    bump(&shared.counters.messages_dropped, encoded);
                    break;
                }
            }
        }
    }
}

async fn connect(shared: &Shared, address: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    stream.write_all(&encode_handshake(shared.id)).await?;
    Ok(stream)
}
