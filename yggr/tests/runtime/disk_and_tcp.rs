//! The full stack on real parts: Nodes on DiskStorage and TcpTransport over loopback. Real
//! time (sockets and files do not run on tokio's paused clock), so waits poll with a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use yggr::{Bootstrap, Config, DiskStorage, Node, NodeId, TcpHandle, TcpTransport};

use crate::common::{Recorder, eventually, id};

const PATIENCE: Duration = Duration::from_secs(20);

struct RealCluster {
    dirs: BTreeMap<NodeId, PathBuf>,
    addresses: BTreeMap<NodeId, SocketAddr>,
    nodes: BTreeMap<NodeId, Node<Recorder>>,
    handles: BTreeMap<NodeId, TcpHandle>,
    _root: tempfile::TempDir,
}

fn config(me: NodeId, peers: impl IntoIterator<Item = NodeId>) -> Config {
    let mut config = Config::new(me, peers);
    config.tick_interval = Duration::from_millis(10);
    config.random_seed = Some(me.get() * 7919);
    config
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

impl RealCluster {
    async fn start(size: u64) -> RealCluster {
        let root = tempfile::tempdir().unwrap();
        let ids: Vec<NodeId> = (1..=size).map(id).collect();
        let addresses: BTreeMap<NodeId, SocketAddr> =
            ids.iter().copied().zip(free_addresses(size)).collect();
        let mut cluster = RealCluster {
            dirs: ids
                .iter()
                .map(|me| (*me, root.path().join(format!("node-{me}"))))
                .collect(),
            addresses,
            nodes: BTreeMap::new(),
            handles: BTreeMap::new(),
            _root: root,
        };
        for me in ids {
            cluster.launch(me).await;
        }
        cluster
    }

    async fn launch(&mut self, me: NodeId) {
        let storage = DiskStorage::open(&self.dirs[&me]).await.unwrap();
        let peers: Vec<(NodeId, SocketAddr)> = self
            .addresses
            .iter()
            .filter(|(other, _)| **other != me)
            .map(|(other, address)| (*other, *address))
            .collect();
        let transport = TcpTransport::start(me, self.addresses[&me], peers.clone())
            .await
            .unwrap();
        self.handles.insert(me, transport.handle());
        let node = Node::start(
            config(me, peers.iter().map(|(other, _)| *other)),
            Recorder::default(),
            storage,
            transport,
        )
        .await
        .unwrap();
        self.nodes.insert(me, node);
    }

    /// Starts `me` as a joiner on a fresh directory and port, known to every running node's
    /// address book (but not a member until a leader adds it).
    async fn launch_joiner(&mut self, me: NodeId) {
        let address = free_addresses(1)[0];
        self.addresses.insert(me, address);
        self.dirs
            .insert(me, self._root.path().join(format!("node-{me}")));
        for handle in self.handles.values() {
            handle.add_peer(me, address);
        }
        let storage = DiskStorage::open(&self.dirs[&me]).await.unwrap();
        let peers: Vec<(NodeId, SocketAddr)> = self
            .addresses
            .iter()
            .filter(|(other, _)| **other != me)
            .map(|(other, address)| (*other, *address))
            .collect();
        let transport = TcpTransport::start(me, address, peers).await.unwrap();
        self.handles.insert(me, transport.handle());
        let mut config = config(me, []);
        config.bootstrap = Bootstrap::Join;
        let node = Node::start(config, Recorder::default(), storage, transport)
            .await
            .unwrap();
        self.nodes.insert(me, node);
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

    /// Writes `command` through whoever leads, retrying while leadership moves.
    async fn write(&self, command: u64) {
        eventually(PATIENCE, || async {
            self.leader().await.write(command).await.ok()
        })
        .await
        .unwrap_or_else(|| panic!("write {command} never succeeded"));
    }

    /// Waits until `me` has applied exactly `expected`.
    async fn applied_on(&self, me: NodeId, expected: &[u64]) {
        let node = &self.nodes[&me];
        let seen = eventually(PATIENCE, || async {
            let applied = node
                .read_linearizable(|state: &Recorder| state.applied.clone())
                .await
                .ok();
            match applied {
                Some(applied) if applied == expected => Some(applied),
                _ => None,
            }
        })
        .await;
        assert!(seen.is_some(), "node {me} never applied {expected:?}");
    }

    async fn shutdown(self) {
        for node in self.nodes.into_values() {
            let _ = node.shutdown().await;
        }
    }
}

/// The leader applied exactly `expected` (a linearizable read there), and every other node
/// applied as far.
async fn applied_everywhere(cluster: &RealCluster, expected: &[u64]) {
    let leader = cluster.leader().await;
    cluster.applied_on(leader.id(), expected).await;
    for node in cluster.nodes.values() {
        let status = eventually(PATIENCE, || async {
            let status = node.status().await.ok()?;
            (status.last_applied.get() >= expected.len() as u64).then_some(status)
        })
        .await;
        assert!(status.is_some(), "node {} never caught up", node.id());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_disk_and_tcp_replicate_survive_a_restart_and_catch_up() {
    let mut cluster = RealCluster::start(3).await;
    for command in 1..=20 {
        cluster.write(command).await;
    }
    let expected: Vec<u64> = (1..=20).collect();
    applied_everywhere(&cluster, &expected).await;

    // Stop a follower, write on, restart it from its directory: it recovers what it stored
    // and catches up over TCP.
    let leader = cluster.leader().await.id();
    let follower = cluster
        .nodes
        .keys()
        .copied()
        .find(|n| *n != leader)
        .unwrap();
    cluster
        .nodes
        .remove(&follower)
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    for command in 21..=40 {
        cluster.write(command).await;
    }
    cluster.launch(follower).await;
    let expected: Vec<u64> = (1..=40).collect();
    applied_everywhere(&cluster, &expected).await;

    // Hand leadership to the restarted node: its log is complete, and it serves.
    let current = cluster.leader().await;
    current.transfer_leadership_to(follower).await.unwrap();
    let new_leader = eventually(PATIENCE, || async {
        let leader = cluster.leader().await;
        (leader.id() == follower).then_some(leader)
    })
    .await
    .expect("leadership moved to the restarted node");
    new_leader.write(41).await.unwrap();
    cluster
        .applied_on(follower, &(1..=41).collect::<Vec<_>>())
        .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_by_the_address_books_rejoins_when_they_heal() {
    let cluster = RealCluster::start(3).await;
    cluster.write(1).await;
    let leader = cluster.leader().await.id();
    let cut = cluster
        .nodes
        .keys()
        .copied()
        .find(|n| *n != leader)
        .unwrap();
    // Drop every connection to and from `cut`.
    for (me, handle) in &cluster.handles {
        if *me == cut {
            for other in cluster.addresses.keys().filter(|other| **other != cut) {
                handle.remove_peer(*other);
            }
        } else {
            handle.remove_peer(cut);
        }
    }
    for command in 2..=10 {
        cluster.write(command).await;
    }
    let behind = cluster.nodes[&cut].status().await.unwrap().last_applied;
    assert!(behind.get() < 10, "the cut-off node kept up: {behind:?}");
    // Heal.
    for (me, handle) in &cluster.handles {
        for (other, address) in &cluster.addresses {
            if other != me {
                handle.add_peer(*other, *address);
            }
        }
    }
    cluster.write(11).await;
    applied_everywhere(&cluster, &(1..=11).collect::<Vec<_>>()).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_connections_are_closed_and_counted_while_the_cluster_serves() {
    let cluster = RealCluster::start(3).await;
    cluster.write(1).await;
    let target = cluster.leader().await.id();
    let address = cluster.addresses[&target];
    let before = cluster.handles[&target].stats();

    // Garbage instead of a handshake.
    let mut garbage = TcpStream::connect(address).await.unwrap();
    garbage.write_all(&[0xAB; 64]).await.unwrap();
    // A well-formed handshake from a node outside the address book.
    let mut stranger = TcpStream::connect(address).await.unwrap();
    let mut handshake = b"YGGRNET1".to_vec();
    handshake.extend_from_slice(&1u32.to_le_bytes());
    handshake.extend_from_slice(&99u64.to_le_bytes());
    stranger.write_all(&handshake).await.unwrap();
    // A known sender, then a length prefix of 4 GiB.
    let mut oversized = TcpStream::connect(address).await.unwrap();
    let known = cluster.addresses.keys().find(|n| **n != target).unwrap();
    let mut claim = b"YGGRNET1".to_vec();
    claim.extend_from_slice(&1u32.to_le_bytes());
    claim.extend_from_slice(&known.get().to_le_bytes());
    oversized.write_all(&claim).await.unwrap();
    oversized.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    // A known sender, then a frame that does not decode.
    let mut malformed = TcpStream::connect(address).await.unwrap();
    malformed.write_all(&claim).await.unwrap();
    malformed.write_all(&8u32.to_le_bytes()).await.unwrap();
    malformed.write_all(&[0xff; 8]).await.unwrap();
    // A half-open connection that never says anything: it just sits there.
    let _silent = TcpStream::connect(address).await.unwrap();

    let handle = &cluster.handles[&target];
    let counted = eventually(PATIENCE, || async {
        let now = handle.stats();
        (now.connections_rejected >= before.connections_rejected + 2
            && now.oversized_frames > before.oversized_frames
            && now.malformed_frames > before.malformed_frames)
            .then_some(now)
    })
    .await;
    assert!(counted.is_some(), "stats: {:?}", handle.stats());
    // The cluster never noticed.
    for command in 2..=5 {
        cluster.write(command).await;
    }
    applied_everywhere(&cluster, &(1..=5).collect::<Vec<_>>()).await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_added_after_compaction_catches_up_by_snapshot_and_is_promoted() {
    let mut cluster = RealCluster::start(3).await;
    for command in 1..=30 {
        cluster.write(command).await;
    }
    // Compact every log, so the newcomer can only catch up from a snapshot.
    for node in cluster.nodes.values() {
        node.admin().trigger_snapshot().await.unwrap();
    }
    let leader = cluster.leader().await;
    let metrics = leader.node_metrics().await.unwrap();
    assert!(
        metrics.engine.log_len < 30,
        "the leader compacted: {metrics:?}"
    );
    let newcomer = id(4);
    cluster.launch_joiner(newcomer).await;
    leader.admin().add_learner(newcomer).await.unwrap();
    let caught_up = eventually(PATIENCE, || async {
        let status = cluster.nodes[&newcomer].status().await.ok()?;
        (status.last_applied.get() >= 30).then_some(status)
    })
    .await;
    assert!(caught_up.is_some(), "the learner caught up");
    let installed = cluster.nodes[&newcomer]
        .metrics()
        .await
        .unwrap()
        .snapshots_installed;
    assert!(installed >= 1, "the learner installed a snapshot");
    cluster
        .leader()
        .await
        .admin()
        .promote_learner(newcomer)
        .await
        .unwrap();
    cluster.write(31).await;
    let voters = cluster
        .leader()
        .await
        .status()
        .await
        .unwrap()
        .membership
        .voters;
    assert!(voters.contains(&newcomer), "{voters:?}");
    applied_everywhere(&cluster, &(1..=31).collect::<Vec<_>>()).await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_idle_inbound_connection_is_closed_and_its_slot_freed() {
    use tokio::io::AsyncReadExt;
    let mut options = yggr::TcpOptions::default();
    options.idle_timeout = Duration::from_millis(200);
    options.max_inbound_connections = 1;
    let me = id(1);
    let peer = id(2);
    let placeholder: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let transport = TcpTransport::start_with(
        me,
        "127.0.0.1:0".parse().unwrap(),
        [(peer, placeholder)],
        options,
    )
    .await
    .unwrap();
    let address = transport.local_addr();
    let mut handshake = b"YGGRNET1".to_vec();
    handshake.extend_from_slice(&1u32.to_le_bytes());
    handshake.extend_from_slice(&peer.get().to_le_bytes());
    // A peer that says hello and then nothing, as one whose machine lost power would.
    let mut silent = TcpStream::connect(address).await.unwrap();
    silent.write_all(&handshake).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), silent.read(&mut byte)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the idle connection was closed: {closed:?}"
    );
    // Its slot is free again: the one allowed connection is accepted.
    let mut next = TcpStream::connect(address).await.unwrap();
    next.write_all(&handshake).await.unwrap();
    let accepted = eventually(PATIENCE, || async {
        (transport.handle().stats().connections_accepted >= 2).then_some(())
    })
    .await;
    assert!(accepted.is_some(), "{:?}", transport.handle().stats());
}
