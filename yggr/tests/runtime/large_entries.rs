//! Entries near the size limits: a command above `max_command_bytes` is refused before it is
//! proposed, and AppendEntries larger than the transport's frame limit still replicate (they
//! travel as several frames). Real sockets and files, so waits poll with a deadline.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use yggr::{
    Config, DecodeError, MemStorage, Node, NodeId, ProposeError, SnapshotError, StateMachine,
    TcpOptions, TcpTransport,
};

use crate::common::{eventually, id};

/// Applies opaque byte commands, keeping the total of the bytes it applied where the test can
/// see it.
#[derive(Default)]
struct Blobs {
    applied_bytes: Arc<Mutex<usize>>,
    count: usize,
}

impl StateMachine for Blobs {
    type Command = Vec<u8>;
    type Response = usize;

    fn encode_command(command: &Vec<u8>) -> Vec<u8> {
        command.clone()
    }

    fn decode_command(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(bytes.to_vec())
    }

    fn apply(&mut self, command: Vec<u8>) -> usize {
        self.count += 1;
        *self.applied_bytes.lock().unwrap() += command.len();
        self.count
    }

    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        Ok(self.count.to_le_bytes().to_vec())
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        self.count = usize::from_le_bytes(bytes.try_into().unwrap_or_default());
    }
}

const FRAME_LIMIT: usize = 16 << 10;
const COMMAND_LIMIT: usize = 8 << 10;

async fn start_three() -> (Vec<Node<Blobs>>, Vec<Arc<Mutex<usize>>>) {
    let listeners: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<(NodeId, SocketAddr)> = listeners
        .iter()
        .enumerate()
        .map(|(position, listener)| (id(position as u64 + 1), listener.local_addr().unwrap()))
        .collect();
    drop(listeners);
    let mut nodes = Vec::new();
    let mut totals = Vec::new();
    for (me, address) in &addresses {
        let peers: Vec<(NodeId, SocketAddr)> = addresses
            .iter()
            .filter(|(other, _)| other != me)
            .copied()
            .collect();
        let mut options = TcpOptions::default();
        options.max_frame_bytes = FRAME_LIMIT;
        let transport = TcpTransport::start_with(*me, *address, peers.clone(), options)
            .await
            .unwrap();
        let mut config = Config::new(*me, peers.iter().map(|(other, _)| *other));
        config.tick_interval = Duration::from_millis(10);
        config.random_seed = Some(me.get());
        config.max_command_bytes = COMMAND_LIMIT;
        let state_machine = Blobs::default();
        totals.push(Arc::clone(&state_machine.applied_bytes));
        let node = Node::start(config, state_machine, MemStorage::new(), transport)
            .await
            .unwrap();
        nodes.push(node);
    }
    (nodes, totals)
}

async fn leader(nodes: &[Node<Blobs>]) -> Node<Blobs> {
    eventually(Duration::from_secs(20), || async {
        nodes
            .iter()
            .find(|node| node.current_leader() == Some(node.id()))
            .cloned()
    })
    .await
    .expect("a leader is elected")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_larger_than_a_frame_replicate_as_several_frames() {
    let (nodes, totals) = start_three().await;
    let leader = leader(&nodes).await;
    // Forty commands of 4 KiB in one batch: one AppendEntries of 160 KiB, ten frame limits.
    let commands: Vec<Vec<u8>> = (0..40u8).map(|byte| vec![byte; 4 << 10]).collect();
    let expected: usize = commands.iter().map(Vec::len).sum();
    leader.write_batch(commands).await.unwrap();
    let everywhere = eventually(Duration::from_secs(20), || async {
        totals
            .iter()
            .all(|total| *total.lock().unwrap() == expected)
            .then_some(())
    })
    .await;
    assert!(
        everywhere.is_some(),
        "applied bytes per node: {:?}, expected {expected}",
        totals
            .iter()
            .map(|total| *total.lock().unwrap())
            .collect::<Vec<_>>()
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_above_max_command_bytes_is_refused_before_it_is_proposed() {
    let (nodes, totals) = start_three().await;
    let leader = leader(&nodes).await;
    let too_large = vec![1; COMMAND_LIMIT + 1];
    assert_eq!(
        leader.write(too_large.clone()).await,
        Err(ProposeError::TooLarge {
            bytes: COMMAND_LIMIT + 1,
            limit: COMMAND_LIMIT
        })
    );
    assert!(matches!(
        leader.write_batch(vec![vec![2; 10], too_large]).await,
        Err(ProposeError::TooLarge { .. })
    ));
    // Nothing of the refused batch was proposed; a command at the limit goes through.
    assert_eq!(leader.write(vec![3; COMMAND_LIMIT]).await, Ok(1));
    assert_eq!(
        *totals[(leader.id().get() - 1) as usize].lock().unwrap(),
        COMMAND_LIMIT
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
