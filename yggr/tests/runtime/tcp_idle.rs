//! Quiet connections: a receiver closes an inbound connection that stays idle for
//! `TcpOptions::idle_timeout`, and a sender only writes. Between two live peers no message
//! may be lost to that: quiet connections carry keep-alives so they are never closed, and a
//! writer that finds its connection closed reconnects before it writes. In a stable cluster
//! the followers never talk to each other, so their connections are exactly the quiet ones
//! a failover needs. Real sockets, so real time: the quiet periods are real waits (they are
//! what is tested), everything else polls with a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use yggr::core::{Message, Rpc, VoteResponse};
use yggr::{Bytes, Config, MemStorage, Node, NodeId, TcpOptions, TcpTransport, Term, Transport};

use crate::common::{Recorder, eventually, id};

/// Short enough to let a test sit through several of them.
const IDLE_TIMEOUT: Duration = Duration::from_millis(200);
/// The quiet period: several idle timeouts, so a connection the receiver would close is
/// certainly closed by the end of it.
const QUIET: Duration = Duration::from_millis(5 * 200);
const PATIENCE: Duration = Duration::from_secs(10);

fn vote(from: u64) -> Message<Bytes> {
    Message {
        from: id(from),
        term: Term::new(1),
        rpc: Rpc::RequestVoteResponse(VoteResponse { granted: true }),
    }
}

fn quick_options() -> TcpOptions {
    let mut options = TcpOptions::default();
    options.idle_timeout = IDLE_TIMEOUT;
    options
}

async fn recv_within(transport: &mut TcpTransport, limit: Duration) -> Option<Message<Bytes>> {
    tokio::time::timeout(limit, transport.recv())
        .await
        .ok()
        .flatten()
}

/// Node 1 (the sender) and node 2 (the receiver), each knowing the other.
async fn sender_and_receiver() -> (TcpTransport, TcpTransport) {
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let receiver = TcpTransport::start_with(
        id(2),
        "127.0.0.1:0".parse().unwrap(),
        [(id(1), placeholder)],
        quick_options(),
    )
    .await
    .unwrap();
    let sender = TcpTransport::start_with(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [(id(2), receiver.local_addr())],
        quick_options(),
    )
    .await
    .unwrap();
    (sender, receiver)
}

/// The failure this guards against: the receiver closed the quiet connection, the sender's
/// next write went into the closed socket (and counted as sent), and the peer's reset threw
/// the message away.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_after_several_idle_timeouts_reaches_the_peer_on_the_first_try() {
    let (mut sender, mut receiver) = sender_and_receiver().await;
    sender.send(id(2), vote(1));
    sender.flush();
    assert!(
        recv_within(&mut receiver, PATIENCE).await.is_some(),
        "the first message opens the connection and arrives"
    );

    tokio::time::sleep(QUIET).await;

    sender.send(id(2), vote(1));
    sender.flush();
    let arrived = recv_within(&mut receiver, Duration::from_secs(2)).await;
    assert!(
        arrived.is_some(),
        "the one message sent after {QUIET:?} of quiet was lost; sender {:?}, receiver {:?}",
        sender.handle().stats(),
        receiver.handle().stats()
    );
    assert_eq!(receiver.handle().stats().frames_received, 2);
}

/// Keep-alives: a connection between two live peers is never closed for being idle, so the
/// one a failover needs is still there, with no reconnect on its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_connection_between_live_peers_is_kept_open() {
    let (mut sender, mut receiver) = sender_and_receiver().await;
    sender.send(id(2), vote(1));
    sender.flush();
    assert!(recv_within(&mut receiver, PATIENCE).await.is_some());

    tokio::time::sleep(QUIET).await;

    sender.send(id(2), vote(1));
    sender.flush();
    let arrived = recv_within(&mut receiver, Duration::from_secs(2)).await;
    let (sent, accepted) = (sender.handle().stats(), receiver.handle().stats());
    assert!(arrived.is_some(), "sender {sent:?}, receiver {accepted:?}");
    assert_eq!(
        (sent.connections_opened, sent.connection_failures),
        (1, 0),
        "the sender had to reconnect after the quiet period: {sent:?}"
    );
    assert_eq!(
        accepted.connections_accepted, 1,
        "the receiver had closed the quiet connection: {accepted:?}"
    );
}

/// Reads the handshake a writer sends on a new connection, and checks it names `sender`.
async fn read_handshake(connection: &mut TcpStream, sender: NodeId) {
    // Version 2: magic, version, sender, then three identity fields.
    let mut handshake = [0u8; 44];
    connection.read_exact(&mut handshake).await.unwrap();
    assert_eq!(&handshake[..8], b"YGGRNET1");
    assert_eq!(handshake[8..12], 2u32.to_le_bytes());
    assert_eq!(handshake[12..20], sender.get().to_le_bytes());
}

/// Reads one frame's payload, skipping keep-alives (frames of length zero).
async fn read_frame(connection: &mut TcpStream) -> Vec<u8> {
    loop {
        let mut length = [0u8; 4];
        connection.read_exact(&mut length).await.unwrap();
        let length = u32::from_le_bytes(length) as usize;
        if length == 0 {
            continue;
        }
        let mut payload = vec![0; length];
        connection.read_exact(&mut payload).await.unwrap();
        return payload;
    }
}

/// A peer may close a connection for its own reasons (an older build's idle timeout, a
/// restart of its reader): the writer must see the close before it writes, and deliver the
/// next message over a new connection instead of into the dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_whose_connection_the_peer_closed_delivers_the_next_message_on_a_new_one() {
    let peer = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut sender = TcpTransport::start_with(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [(id(2), peer.local_addr().unwrap())],
        quick_options(),
    )
    .await
    .unwrap();
    sender.send(id(2), vote(1));
    sender.flush();
    let (mut first, _) = peer.accept().await.unwrap();
    read_handshake(&mut first, id(1)).await;
    assert!(!read_frame(&mut first).await.is_empty());
    // Everything sent was read, so this close is an orderly one (FIN, no reset).
    drop(first);

    sender.send(id(2), vote(1));
    sender.flush();
    let second = tokio::time::timeout(Duration::from_secs(2), peer.accept()).await;
    let Ok(Ok((mut second, _))) = second else {
        panic!(
            "the writer never reconnected; its message went into the closed connection: {:?}",
            sender.handle().stats()
        );
    };
    read_handshake(&mut second, id(1)).await;
    let payload = tokio::time::timeout(Duration::from_secs(2), read_frame(&mut second)).await;
    let decoded =
        payload.map(|payload| yggr::core::wire::decode_message_bytes(Bytes::from(payload)));
    assert!(
        matches!(decoded, Ok(Ok(ref message)) if *message == vote(1)),
        "the message after the close arrived on the new connection: {decoded:?}"
    );
}

// ---------------------------------------------------------------------------------------
// A cluster over TCP: after a quiet period, the followers' connections to each other must
// still carry a leadership transfer's votes.
// ---------------------------------------------------------------------------------------

struct TcpCluster {
    nodes: BTreeMap<NodeId, Node<Recorder>>,
}

/// Loopback addresses with ports the OS picked, reserved by binding and released.
fn free_addresses(count: u64) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap())
        .collect()
}

/// Ticks of 10 ms: an election timeout of 100-200 ms, heartbeats every 30 ms.
fn cluster_config(me: NodeId, peers: impl IntoIterator<Item = NodeId>) -> Config {
    let mut config = Config::new(me, peers);
    config.tick_interval = Duration::from_millis(10);
    config.random_seed = Some(me.get() * 7919);
    config
}

const ELECTION_TIMEOUT_MAX: Duration = Duration::from_millis(200);

impl TcpCluster {
    async fn start(size: u64, options: TcpOptions) -> TcpCluster {
        let ids: Vec<NodeId> = (1..=size).map(id).collect();
        let addresses: BTreeMap<NodeId, SocketAddr> =
            ids.iter().copied().zip(free_addresses(size)).collect();
        let mut cluster = TcpCluster {
            nodes: BTreeMap::new(),
        };
        for me in ids {
            let peers: Vec<(NodeId, SocketAddr)> = addresses
                .iter()
                .filter(|(other, _)| **other != me)
                .map(|(other, address)| (*other, *address))
                .collect();
            let transport =
                TcpTransport::start_with(me, addresses[&me], peers.clone(), options.clone())
                    .await
                    .unwrap();
            let config = cluster_config(me, peers.iter().map(|(other, _)| *other));
            let node = Node::start(config, Recorder::default(), MemStorage::new(), transport)
                .await
                .unwrap();
            cluster.nodes.insert(me, node);
        }
        cluster
    }

    async fn leader(&self) -> Node<Recorder> {
        eventually(PATIENCE, || async {
            self.nodes
                .values()
                .find(|node| node.current_leader() == Some(node.id()))
                .cloned()
        })
        .await
        .expect("a leader within the deadline")
    }

    /// Hands leadership to `target`, retrying until it leads (the warm-up may meet the very
    /// failure the test is about, so it must not depend on the first try).
    async fn move_leadership_to(&self, target: NodeId) {
        let moved = eventually(PATIENCE, || async {
            let leader = self.leader().await;
            if leader.id() == target {
                return Some(());
            }
            let _ = leader.transfer_leadership_to(target).await;
            None
        })
        .await;
        assert!(moved.is_some(), "node {target} never took over");
    }

    async fn shutdown(self) {
        for node in self.nodes.into_values() {
            let _ = node.shutdown().await;
        }
    }
}

/// Four voters (a transfer's candidate needs a follower's vote besides the old leader's).
/// Leadership first visits every node, so each has a connection to each other; then the
/// cluster is quiet but for the leader's heartbeats, for several idle timeouts; then a
/// transfer to a follower must win in the very next term: its vote requests to the other
/// followers travel over connections that were quiet all that time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_after_a_long_quiet_period_succeeds_on_the_first_try() {
    let mut options = TcpOptions::default();
    options.idle_timeout = Duration::from_millis(400);
    let quiet = 5 * options.idle_timeout;
    let cluster = TcpCluster::start(4, options).await;
    let ids: Vec<NodeId> = cluster.nodes.keys().copied().collect();
    for node in &ids {
        cluster.move_leadership_to(*node).await;
    }
    let leader = cluster.leader().await;
    leader.write(1).await.unwrap();

    tokio::time::sleep(quiet).await;

    let leader = cluster.leader().await;
    let term_before = leader.status().await.unwrap().current_term;
    let target = *ids.iter().find(|node| **node != leader.id()).unwrap();
    let started = Instant::now();
    leader.transfer_leadership_to(target).await.unwrap();
    let took_over = eventually(
        2 * ELECTION_TIMEOUT_MAX + Duration::from_secs(1),
        || async {
            let status = cluster.nodes[&target].status().await.ok()?;
            (status.leader == Some(target)).then_some(status.current_term)
        },
    )
    .await;
    let elapsed = started.elapsed();
    assert_eq!(
        took_over,
        Some(Term::new(term_before.get() + 1)),
        "node {target} did not win the transfer's own election (term {}) after {quiet:?} of \
         quiet; waited {elapsed:?}",
        term_before.get() + 1
    );
    assert!(
        elapsed < 2 * ELECTION_TIMEOUT_MAX,
        "the transfer took {elapsed:?}, more than two election timeouts"
    );
    cluster.shutdown().await;
}
