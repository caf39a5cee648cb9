//! A replicated counter on three in-process nodes: the shortest complete yggr service.
//!
//! ```sh
//! cargo run -p yggr --example counter
//! ```
//!
//! Each node gets a `Config`, a state machine, storage and a transport. Here storage is
//! `MemStorage` and the network is `LocalNetwork`; swap in durable storage and a real network
//! for a deployment, nothing else changes.

use std::time::Duration;

use yggr::{
    Config, DecodeError, LocalNetwork, MemStorage, Node, NodeId, ProposeError, StateMachine,
};

/// The replicated state: one number.
#[derive(Default)]
struct Counter {
    value: i64,
}

impl StateMachine for Counter {
    /// How much to add.
    type Command = i64;
    /// The value after adding it.
    type Response = i64;

    fn encode_command(command: &i64) -> Vec<u8> {
        command.to_le_bytes().to_vec()
    }

    fn decode_command(bytes: &[u8]) -> Result<i64, DecodeError> {
        let bytes: [u8; 8] = bytes
            .try_into()
            .map_err(|_| DecodeError::new("a command is 8 bytes"))?;
        Ok(i64::from_le_bytes(bytes))
    }

    fn apply(&mut self, command: i64) -> i64 {
        self.value += command;
        self.value
    }
}

fn id(raw: u64) -> NodeId {
    NodeId::new(raw).expect("node ids are nonzero")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let network = LocalNetwork::new();
    let ids = [id(1), id(2), id(3)];
    let mut nodes = Vec::new();
    for me in ids {
        // With peers, `Config::new` founds a new cluster of `me` and the peers.
        let config = Config::new(me, ids.into_iter().filter(|peer| *peer != me));
        let node = Node::start(
            config,
            Counter::default(),
            MemStorage::new(),
            network.transport(me),
        )
        .await?;
        nodes.push(node);
    }

    // Any node can take the call; a follower answers NotLeader with the leader's id.
    let mut target = nodes[0].clone();
    let mut total = 0;
    for step in 1..=10 {
        loop {
            match target.write(step).await {
                Ok(value) => {
                    total = value;
                    break;
                }
                Err(ProposeError::NotLeader { leader_hint }) => {
                    target = nodes[leader_hint.get() as usize - 1].clone();
                }
                // No leader yet: the cluster is electing one.
                Err(ProposeError::NoLeader) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(other) => return Err(other.into()),
            }
        }
    }
    let read = target
        .read_linearizable(|counter: &Counter| counter.value)
        .await?;
    println!(
        "leader {}: counter at {total}, read back {read}",
        target.id()
    );
    assert_eq!(read, 55);

    for node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}
