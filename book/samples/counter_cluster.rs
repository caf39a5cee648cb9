// Shared by the runtime chapters' samples (included by a hidden line in each): a counter state
// machine with snapshots, and a cluster of them on the in-memory storage and transport.

// Inside a module, so that a sample may import the same names itself.
mod shared {
    use std::time::Duration;

    use yggr::{
        Config, DecodeError, LocalNetwork, MemStorage, Node, NodeId, SnapshotError, StateMachine,
    };

    /// The replicated state: one number.
    #[derive(Default)]
    pub struct Counter {
        pub value: i64,
    }

    impl StateMachine for Counter {
        type Command = i64;
        type Response = i64;

        fn encode_command(command: &i64) -> Vec<u8> {
            command.to_le_bytes().to_vec()
        }
        fn decode_command(bytes: &[u8]) -> Result<i64, DecodeError> {
            let bytes: [u8; 8] = bytes.try_into().map_err(|_| DecodeError::new("8 bytes"))?;
            Ok(i64::from_le_bytes(bytes))
        }
        fn apply(&mut self, command: i64) -> i64 {
            self.value += command;
            self.value
        }
        fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
            Ok(self.value.to_le_bytes().to_vec())
        }
        fn restore(&mut self, bytes: Vec<u8>) {
            let bytes: [u8; 8] = bytes.try_into().expect("a snapshot this counter took");
            self.value = i64::from_le_bytes(bytes);
        }
    }

    /// A node id from a number; ids are nonzero.
    pub fn id(raw: u64) -> NodeId {
        NodeId::new(raw).expect("nonzero")
    }

    /// Nodes 1..=size on one in-process network, each on its own in-memory storage.
    pub struct Cluster {
        pub network: LocalNetwork,
        pub nodes: Vec<Node<Counter>>,
        pub storages: Vec<MemStorage>,
    }

    impl Cluster {
        /// Founds a cluster of `size` nodes.
        pub async fn start(size: u64) -> Cluster {
            let network = LocalNetwork::new();
            let ids: Vec<NodeId> = (1..=size).map(id).collect();
            let (mut nodes, mut storages) = (Vec::new(), Vec::new());
            for &me in &ids {
                let mut config = Config::new(me, ids.iter().copied().filter(|peer| *peer != me));
                config.random_seed = Some(me.get());
                let storage = MemStorage::new();
                let transport = network.transport(me);
                let node = Node::start(config, Counter::default(), storage.clone(), transport)
                    .await
                    .expect("a valid configuration on empty storage");
                nodes.push(node);
                storages.push(storage);
            }
            Cluster { network, nodes, storages }
        }

        /// The node with this id.
        pub fn node(&self, node: NodeId) -> &Node<Counter> {
            &self.nodes[node.get() as usize - 1]
        }

        /// Waits until a node leads and returns it.
        pub async fn leader(&self) -> Node<Counter> {
            loop {
                if let Some(leader) = self.nodes.iter().find(|n| n.current_leader() == Some(n.id())) {
                    return leader.clone();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
use shared::{Cluster, Counter, id};
