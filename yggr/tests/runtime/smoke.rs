//! A first end-to-end check: three nodes in one process elect a leader, write and read.

use std::time::Duration;

use yggr::{Config, DecodeError, LocalNetwork, MemStorage, Node, NodeId, StateMachine};

#[derive(Default)]
struct Counter(u64);

impl StateMachine for Counter {
    type Command = u64;
    type Response = u64;
    fn encode_command(command: &u64) -> Vec<u8> {
        command.to_le_bytes().to_vec()
    }
    fn decode_command(bytes: &[u8]) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(
            bytes.try_into().map_err(|_| DecodeError::new("8 bytes"))?,
        ))
    }
    fn apply(&mut self, command: u64) -> u64 {
        self.0 += command;
        self.0
    }
}

fn id(raw: u64) -> NodeId {
    NodeId::new(raw).unwrap()
}

#[tokio::test(start_paused = true)]
async fn three_nodes_elect_write_and_read() {
    let network = LocalNetwork::new();
    let ids = [id(1), id(2), id(3)];
    let mut nodes = Vec::new();
    for me in ids {
        let mut config = Config::new(me, ids.into_iter().filter(|other| *other != me));
        config.random_seed = Some(7);
        let node = Node::start(
            config,
            Counter::default(),
            MemStorage::new(),
            network.transport(me),
        )
        .await
        .unwrap();
        nodes.push(node);
    }
    let leader = loop {
        if let Some(leader) = nodes
            .iter()
            .find(|node| node.current_leader() == Some(node.id()))
        {
            break leader.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(leader.write(5).await.unwrap(), 5);
    assert_eq!(leader.write(6).await.unwrap(), 11);
    assert_eq!(
        leader.read_linearizable(|c: &Counter| c.0).await.unwrap(),
        11
    );
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}
