//! One writer task per peer: connect, handshake, then write whatever is queued as frames in
//! one go.
//!
//! A quiet connection must stay usable, because the quiet ones are exactly those a failover
//! needs (followers never talk to each other while a leader is stable). Two things see to
//! it:
//!
//! - The peer never writes on this connection, so the task also waits for it to become
//!   readable: any readable event is the peer closing or resetting it, and is seen before
//!   the next message, not by losing that message to the reset. Before each batch the
//!   socket is asked directly (a close the runtime has not reported yet shows there too),
//!   and a batch that finds its connection closed, or whose write fails, is written once
//!   more over a fresh connection.
//! - A connection quiet for a third of the idle timeout carries a keep-alive frame, so a
//!   live peer never closes it for being idle.
//!
//! A lost connection is made again at once. A failed connect, or a second connection in a
//! row that the peer closed soon after it was made (it refuses this node, say), waits first,
//! with a backoff that doubles, and jitter.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tracing::{debug, info, warn};
use yggr_core::{Message, NodeId};

use super::frame::{KEEP_ALIVE, encode_frames, encode_handshake};
use super::tls::{TlsConfig, describe_certificate_error, rustls_error};
use super::{Shared, bump};
use crate::sys::net::{ReadHalf, TcpStream, WriteHalf};

/// The most messages written in one `write` call.
const MAX_BATCH: usize = 1024;

/// Runs until the transport is dropped or `peer` leaves the address book.
pub(super) async fn write_to_peer(
    shared: Arc<Shared>,
    peer: NodeId,
    queue: mpsc::Receiver<Message<Bytes>>,
) {
    let mut writer = Writer::new(shared, peer, queue);
    loop {
        let Some(address) = writer.shared.address(peer) else {
            return;
        };
        let Some(mut connection) = writer.connect_after_failures(address).await else {
            writer.back_off().await;
            if writer.queue.is_closed() {
                return;
            }
            continue;
        };
        match writer.serve(&mut connection).await {
            Ended::Stop => return,
            Ended::Moved => {}
            Ended::Lost => {
                if !writer.after_loss(&connection).await {
                    return;
                }
            }
        }
    }
}

/// How serving one connection ended.
enum Ended {
    /// The transport dropped the queue, or the peer left the address book.
    Stop,
    /// The peer's address changed; the batch in hand goes to the new one.
    Moved,
    /// The connection broke or the peer closed it.
    Lost,
}

/// What woke a writer waiting on an idle connection.
enum Wake {
    /// Messages were taken from the queue into the batch.
    Batch,
    /// The transport dropped the queue.
    QueueClosed,
    /// The peer closed or reset the connection (or, against the protocol, wrote on it).
    PeerClosed(std::io::Result<usize>),
    /// Nothing was written for the keep-alive interval.
    KeepAliveDue,
}

/// A connection's stream: plaintext, split in halves, or TLS.
enum Link {
    Plain {
        /// Only read to learn that the peer closed the connection: it never writes.
        reader: ReadHalf,
        writer: WriteHalf,
    },
    /// Read only to learn that the peer closed the connection, as a plaintext one: the
    /// accepting side sends nothing after the TLS handshake (no session tickets).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// One connection to the peer.
struct Connection {
    address: SocketAddr,
    link: Link,
    opened: Instant,
    /// When the last frame (a keep-alive included) went out, or the connection was made.
    last_write: Instant,
}

impl Connection {
    /// What the socket says, without waiting, if the peer has closed or reset the connection
    /// (or written on it). It asks the socket itself rather than the runtime's record of
    /// its readiness, which learns of a close only once the reactor has run.
    fn closed_by_peer(&mut self) -> Option<std::io::Result<usize>> {
        match &mut self.link {
            Link::Plain { reader, .. } => reader.readable_now(),
            Link::Tls(stream) => {
                // The socket under TLS first: after the handshake the peer sends nothing but
                // an alert (its refusal of this node's certificate, say) or a close.
                let raw = stream.get_mut().0.readable_now()?;
                // Something is there: read it through TLS, without waiting, to learn what.
                let mut probe = [0u8; 1];
                let mut buffer = ReadBuf::new(&mut probe);
                let mut context = Context::from_waker(Waker::noop());
                match Pin::new(&mut **stream).poll_read(&mut context, &mut buffer) {
                    Poll::Ready(Ok(())) => Some(Ok(buffer.filled().len())),
                    Poll::Ready(Err(error)) => Some(Err(error)),
                    // Bytes the runtime has not seen yet, or a record that carries no data (a
                    // TLS key update, very rarely): taken as a close, which costs a reconnect
                    // and loses nothing.
                    Poll::Pending => Some(raw.map(|_| 0)),
                }
            }
        }
    }

    /// Reads what the peer sent, which is only ever its close (or a protocol violation).
    /// Cancel-safe.
    async fn read(&mut self, probe: &mut [u8]) -> std::io::Result<usize> {
        match &mut self.link {
            Link::Plain { reader, .. } => reader.read(probe).await,
            Link::Tls(stream) => stream.read(probe).await,
        }
    }

    /// Writes all of `bytes`.
    ///
    /// # Errors
    /// The write's error, or `TimedOut` past `limit`.
    async fn write(&mut self, bytes: &[u8], limit: Duration) -> std::io::Result<()> {
        let written = async {
            match &mut self.link {
                Link::Plain { writer, .. } => writer.write_all(bytes).await,
                Link::Tls(stream) => {
                    stream.write_all(bytes).await?;
                    // rustls may hold records back: send them now.
                    stream.flush().await
                }
            }
        };
        match timeout(limit, written).await {
            Ok(Ok(())) => {
                self.last_write = Instant::now();
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
        }
    }
}

/// A writer's state across its connections.
struct Writer {
    shared: Arc<Shared>,
    peer: NodeId,
    queue: mpsc::Receiver<Message<Bytes>>,
    /// Messages taken from the queue and not yet written or dropped.
    batch: Vec<Message<Bytes>>,
    /// The frames of the batch being written.
    buffer: BytesMut,
    rng: ChaCha8Rng,
    /// The wait before the next connect, if it must wait.
    backoff: Duration,
    /// Whether the last attempt to connect failed.
    failing: bool,
    /// Connections in a row that the peer closed before they had lived
    /// `reconnect_backoff_max`.
    early_closes: u32,
    /// The TLS material last connected with, and the client configuration made from it for
    /// this peer: made again only when the material changes.
    tls: Option<(TlsConfig, Arc<ClientConfig>)>,
    /// Whether the peer's refusal of this node's TLS handshake was logged at warn since a
    /// connection last lived long (it refuses every connection the same way).
    tls_refusal_logged: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>, peer: NodeId, queue: mpsc::Receiver<Message<Bytes>>) -> Writer {
        // Jitter from a seed of the two ids: reconnect storms spread out, and a test run
        // repeats the same schedule.
        let rng = ChaCha8Rng::seed_from_u64(shared.id.get() ^ peer.get().rotate_left(32));
        let backoff = shared.options.reconnect_backoff_min;
        Writer {
            shared,
            peer,
            queue,
            batch: Vec::with_capacity(MAX_BATCH),
            buffer: BytesMut::with_capacity(64 << 10),
            rng,
            backoff,
            failing: false,
            early_closes: 0,
            tls: None,
            tls_refusal_logged: false,
        }
    }

    /// Decides what follows the loss of `connection`: returns whether to connect again. One
    /// that served a while says nothing about the next, and a single early close may be a
    /// peer restarting: both reconnect at once, so a message queued meanwhile is not dropped.
    /// A second early close in a row most likely means the peer refuses this node: back off.
    async fn after_loss(&mut self, connection: &Connection) -> bool {
        let options = &self.shared.options;
        if connection.opened.elapsed() >= options.reconnect_backoff_max {
            self.backoff = options.reconnect_backoff_min;
            self.early_closes = 0;
            self.tls_refusal_logged = false;
            return true;
        }
        self.early_closes += 1;
        if self.early_closes > 1 {
            self.back_off().await;
        }
        !self.queue.is_closed()
    }

    /// Connects to `address`, logging the first failure of a streak and the recovery.
    async fn connect_after_failures(&mut self, address: SocketAddr) -> Option<Connection> {
        let error = match self.connect(address).await {
            Ok(connection) => {
                if self.failing {
                    info!(target: "yggr::node", peer = self.peer.get(), %address, "connected to peer");
                    self.failing = false;
                }
                return Some(connection);
            }
            Err(error) => error,
        };
        // The first failure of a streak is worth an operator's eye (a wrong address looks
        // like this, and nothing else would say so); the retries are not.
        if self.failing {
            debug!(target: "yggr::node", peer = self.peer.get(), %address, %error, "connect failed again");
        } else {
            warn!(target: "yggr::node", peer = self.peer.get(), %address, %error, "cannot connect to peer; retrying with backoff");
            self.failing = true;
        }
        None
    }

    /// Connects and sends the handshake, within the I/O timeout; counts the outcome.
    ///
    /// # Errors
    /// The connect's or the handshake's error, or `TimedOut`.
    async fn connect(&mut self, address: SocketAddr) -> std::io::Result<Connection> {
        let limit = self.shared.options.io_timeout;
        let client = self.client_config()?;
        let connecting = connect(&self.shared, self.peer, address, client);
        let connected = match timeout(limit, connecting).await {
            Ok(connected) => connected,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {limit:?}"),
            )),
        };
        let counters = &self.shared.counters;
        match connected {
            Ok(link) => {
                bump(&counters.connections_opened, 1);
                let now = Instant::now();
                Ok(Connection {
                    address,
                    link,
                    opened: now,
                    last_write: now,
                })
            }
            Err(error) => {
                bump(&counters.connection_failures, 1);
                Err(explain_tls_failure(&self.shared, error))
            }
        }
    }

    /// The TLS client configuration to connect to the peer with, if this node speaks TLS:
    /// made from the material in use, which [`super::TcpHandle::set_tls`] may have replaced.
    ///
    /// # Errors
    /// rustls's refusal of the material (never expected: it was checked when built).
    fn client_config(&mut self) -> std::io::Result<Option<Arc<ClientConfig>>> {
        let Some(current) = self.shared.tls() else {
            return Ok(None);
        };
        if let Some((material, client)) = &self.tls
            && material.same_as(&current)
        {
            return Ok(Some(client.clone()));
        }
        let client = current
            .client_config(self.peer)
            .map_err(std::io::Error::other)?;
        self.tls = Some((current, client.clone()));
        Ok(Some(client))
    }

    /// Drops what is queued (it would be stale by the time it arrived) and waits out the
    /// backoff, with jitter; the next wait is twice as long, up to the maximum.
    async fn back_off(&mut self) {
        let mut stale = self.batch.len() as u64;
        self.batch.clear();
        while self.queue.try_recv().is_ok() {
            stale += 1;
        }
        bump(&self.shared.counters.messages_dropped, stale);
        let jitter = self.rng.random_range(0.5..1.5);
        tokio::time::sleep(self.backoff.mul_f64(jitter)).await;
        self.backoff = (self.backoff * 2).min(self.shared.options.reconnect_backoff_max);
    }

    /// Writes batches (and keep-alives when quiet) until the connection is lost, the peer
    /// moves or leaves, or the transport is dropped.
    async fn serve(&mut self, connection: &mut Connection) -> Ended {
        let io_timeout = self.shared.options.io_timeout;
        loop {
            // A batch carried over from a connection to a peer's old address goes first.
            if self.batch.is_empty() {
                match self.wait(connection).await {
                    Wake::Batch => {}
                    Wake::QueueClosed => return Ended::Stop,
                    Wake::PeerClosed(read) => {
                        self.peer_closed(read, connection.address);
                        return Ended::Lost;
                    }
                    Wake::KeepAliveDue => {
                        if let Err(error) = connection.write(&KEEP_ALIVE, io_timeout).await {
                            debug!(target: "yggr::node", peer = self.peer.get(), %error, "keep-alive failed; reconnecting");
                            bump(&self.shared.counters.connection_failures, 1);
                            return Ended::Lost;
                        }
                        continue;
                    }
                }
            }
            // The address book may have changed since the connection was made: a removed
            // peer gets nothing more, a moved one gets this batch over a new connection.
            match self.shared.address(self.peer) {
                None => {
                    bump(
                        &self.shared.counters.messages_dropped,
                        self.batch.len() as u64,
                    );
                    self.batch.clear();
                    return Ended::Stop;
                }
                Some(current) if current != connection.address => return Ended::Moved,
                Some(_) => {}
            }
            let encoded = self.encode_batch();
            if encoded == 0 {
                // Every message of the batch was too large, and was dropped.
                continue;
            }
            if !self.write_batch(connection, encoded).await {
                return Ended::Lost;
            }
        }
    }

    /// Waits for messages, the peer's close, or the time for a keep-alive, whichever comes
    /// first; the peer's close is looked at first, so no message is written into a
    /// connection already known to be closed.
    async fn wait(&mut self, connection: &mut Connection) -> Wake {
        let keep_alive_due = connection.last_write + self.shared.options.keep_alive_interval();
        // Anything the peer sends would be a protocol violation; one byte is enough to tell.
        let mut probe = [0u8; 1];
        tokio::select! {
            biased;
            read = connection.read(&mut probe) => Wake::PeerClosed(read),
            received = self.queue.recv_many(&mut self.batch, MAX_BATCH) => {
                if received == 0 { Wake::QueueClosed } else { Wake::Batch }
            }
            () = tokio::time::sleep_until(keep_alive_due) => Wake::KeepAliveDue,
        }
    }

    fn peer_closed(&mut self, read: std::io::Result<usize>, address: SocketAddr) {
        let peer = self.peer.get();
        match read {
            Ok(0) => debug!(target: "yggr::node", peer, "peer closed the connection; reconnecting"),
            Ok(_) => {
                warn!(target: "yggr::node", peer, "peer wrote on an outbound connection; closing it");
            }
            // Under TLS 1.3 the connecting side finishes its handshake before the peer has
            // checked its certificate: a refusal arrives as an alert on the connection.
            Err(error) if matches!(rustls_error(&error), Some(rustls::Error::AlertReceived(_))) => {
                let message = "the peer refused this node's TLS handshake: is this node's \
                               certificate valid, and issued by a CA of the peer's CA bundle?";
                if self.tls_refusal_logged {
                    debug!(target: "yggr::node", peer, %address, %error, "{message}");
                } else {
                    warn!(target: "yggr::node", peer, %address, %error, "{message}");
                    self.tls_refusal_logged = true;
                }
            }
            Err(error) => {
                debug!(target: "yggr::node", peer, %error, "connection reset; reconnecting");
            }
        }
        bump(&self.shared.counters.connection_failures, 1);
    }

    /// Encodes the batch into the buffer, dropping (and counting) what no frame can carry.
    /// Returns how many messages the buffer holds: they are sent or dropped together.
    fn encode_batch(&mut self) -> u64 {
        let limit = self.shared.options.max_frame_bytes;
        self.buffer.clear();
        let mut encoded = 0;
        for message in self.batch.drain(..) {
            match encode_frames(&message, limit, &mut self.buffer) {
                Ok(_frames) => encoded += 1,
                Err(bytes) => {
                    // The peer would refuse it and close the connection: never send it.
                    warn!(target: "yggr::node", peer = self.peer.get(), bytes, limit, kind = message.rpc.kind(), "dropping a message larger than the frame limit");
                    bump(&self.shared.counters.messages_dropped, 1);
                }
            }
        }
        encoded
    }

    /// Writes the buffer, holding `encoded` messages. A connection found closed by the peer
    /// just now, or a write that fails with an error (the close raced it), gets the batch
    /// written once more over a fresh connection, which replaces `connection`: a message
    /// taken from the queue is not lost to a close the writer could not see coming. A write
    /// that timed out is not retried: the peer is alive but not reading, and the batch would
    /// arrive stale. Returns whether the batch went out; if not, it is counted as dropped and
    /// the connection is lost.
    async fn write_batch(&mut self, connection: &mut Connection, encoded: u64) -> bool {
        let shared = self.shared.clone();
        let counters = &shared.counters;
        let limit = self.shared.options.io_timeout;
        if let Some(read) = connection.closed_by_peer() {
            self.peer_closed(read, connection.address);
        } else {
            match connection.write(&self.buffer, limit).await {
                Ok(()) => {
                    bump(&counters.frames_sent, encoded);
                    return true;
                }
                Err(error) => {
                    bump(&counters.connection_failures, 1);
                    if error.kind() == std::io::ErrorKind::TimedOut {
                        debug!(target: "yggr::node", peer = self.peer.get(), "write timed out; reconnecting");
                        bump(&counters.messages_dropped, encoded);
                        return false;
                    }
                    debug!(target: "yggr::node", peer = self.peer.get(), %error, "write failed");
                }
            }
        }
        debug!(target: "yggr::node", peer = self.peer.get(), "sending the batch again over a new connection");
        if let Ok(fresh) = self.connect(connection.address).await {
            *connection = fresh;
            match connection.write(&self.buffer, limit).await {
                Ok(()) => {
                    bump(&counters.frames_sent, encoded);
                    return true;
                }
                Err(_) => bump(&counters.connection_failures, 1),
            }
        }
        debug!(target: "yggr::node", peer = self.peer.get(), "connection lost; reconnecting");
        bump(&counters.messages_dropped, encoded);
        false
    }
}

/// Connects to `peer` at `address`, over TLS with `tls` if given, and sends the handshake,
/// which carries this node's identity and the incarnation it accepted from `peer`, if any.
async fn connect(
    shared: &Shared,
    peer: NodeId,
    address: SocketAddr,
    tls: Option<Arc<ClientConfig>>,
) -> std::io::Result<Link> {
    let mut stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let handshake = encode_handshake(&shared.handshake_for(peer));
    let Some(tls) = tls else {
        stream.write_all(&handshake).await?;
        let (reader, writer) = stream.into_split();
        return Ok(Link::Plain { reader, writer });
    };
    // The name is not checked (the certificate must name the peer's id instead), and an
    // address sends no SNI.
    let name = ServerName::IpAddress(address.ip().into());
    let mut stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, stream)
        .await?;
    stream.write_all(&handshake).await?;
    stream.flush().await?;
    Ok(Link::Tls(Box::new(stream)))
}

/// `error`, from a connect, said in an operator's words when TLS refused it; a refused
/// server certificate is counted.
fn explain_tls_failure(shared: &Shared, error: std::io::Error) -> std::io::Error {
    if shared.tls.is_none() {
        return error;
    }
    let explained = match rustls_error(&error) {
        Some(rustls::Error::InvalidCertificate(reason)) => {
            bump(&shared.counters.refused_server_certificates, 1);
            let reason = describe_certificate_error(reason);
            format!("refusing the peer's TLS certificate: {reason}")
        }
        Some(rustls::Error::AlertReceived(alert)) => format!(
            "the peer refused the TLS handshake ({alert:?}): is this node's certificate valid, \
             and issued by a CA of the peer's CA bundle?"
        ),
        Some(other) => format!("TLS handshake failed: {other}"),
        None if matches!(
            error.kind(),
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
        ) =>
        {
            format!(
                "the peer closed the connection during the TLS handshake ({error}): is it \
                 configured for TLS?"
            )
        }
        None => return error,
    };
    std::io::Error::new(error.kind(), explained)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::BytesMut;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;
    use yggr_core::{Rpc, Term, VoteResponse};

    use super::super::TcpOptions;
    use super::super::frame::{HANDSHAKE_BYTES, decode_frame};
    use super::*;

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    fn vote() -> Message<Bytes> {
        Message {
            from: id(1),
            term: Term::new(4),
            rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }),
        }
    }

    /// Node 1's writer to node 2, listening at `address`.
    fn writer_to(address: SocketAddr) -> (Writer, mpsc::Sender<Message<Bytes>>) {
        let shared = Arc::new(Shared::new(
            id(1),
            TcpOptions::default(),
            HashMap::from([(id(2), address)]),
        ));
        let (queue, receiver) = mpsc::channel(8);
        (Writer::new(shared, id(2), receiver), queue)
    }

    /// The message a new connection carries after its handshake.
    async fn first_message_on(connection: &mut tokio::net::TcpStream) -> Message<Bytes> {
        let mut bytes = BytesMut::new();
        loop {
            connection.read_buf(&mut bytes).await.unwrap();
            if bytes.len() > HANDSHAKE_BYTES {
                let mut frames = bytes.split_off(HANDSHAKE_BYTES);
                if let Some(message) = decode_frame(&mut frames, 1 << 20).unwrap() {
                    return message;
                }
                bytes.unsplit(frames);
            }
        }
    }

    /// The peer closed the connection, and the writer took a batch before anything told it:
    /// the batch must go out over a fresh connection, not into the closed one.
    #[tokio::test]
    async fn a_batch_that_finds_its_connection_closed_goes_out_over_a_fresh_one() {
        for reset in [false, true] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let (mut writer, _queue) = writer_to(listener.local_addr().unwrap());
            let mut connection = writer
                .connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (mut first, _) = listener.accept().await.unwrap();
            if !reset {
                // Everything read: an orderly close. Otherwise unread bytes make it a reset.
                first.read_exact(&mut [0; HANDSHAKE_BYTES]).await.unwrap();
            }
            drop(first);

            writer.batch.push(vote());
            let encoded = writer.encode_batch();
            assert!(writer.write_batch(&mut connection, encoded).await);
            let second = timeout(Duration::from_secs(5), listener.accept()).await;
            let (mut second, _) = second.expect("a fresh connection").unwrap();
            let message = timeout(Duration::from_secs(5), first_message_on(&mut second)).await;
            assert_eq!(message.ok(), Some(vote()), "reset: {reset}");
            let counters = &writer.shared.counters;
            let read = |counter: &std::sync::atomic::AtomicU64| {
                counter.load(std::sync::atomic::Ordering::Relaxed)
            };
            assert_eq!(read(&counters.frames_sent), 1);
            assert_eq!(read(&counters.messages_dropped), 0);
            assert_eq!(read(&counters.connections_opened), 2);
            assert_eq!(read(&counters.connection_failures), 1);
        }
    }
}
