//! A three-node cluster driven in memory, no I/O: how many entries per second the engine
//! commits for single proposals and for batches of 64. Messages are routed in order between
//! engines until the cluster is quiet, so each iteration includes replication, acknowledgement,
//! commit and apply on every node.

use std::collections::VecDeque;
use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use yggr_core::{Action, Engine, Event, Message, NodeId, RandomEnv, Role};

struct Cluster {
    engines: Vec<Engine<u64>>,
    queue: VecDeque<(NodeId, Message<u64>)>,
}

impl Cluster {
    fn elected() -> Cluster {
        let ids: Vec<NodeId> = (1..=3).map(|raw| NodeId::new(raw).unwrap()).collect();
        let engines = ids
            .iter()
            .map(|me| {
                let peers = ids.iter().copied().filter(|other| other != me);
                Engine::new(*me, peers, RandomEnv::seeded(me.get()), 3)
            })
            .collect();
        let mut cluster = Cluster {
            engines,
            queue: VecDeque::new(),
        };
        while cluster.engines[0].role() != Role::Leader {
            let actions = cluster.engines[0].step(Event::Tick);
            cluster.route(actions);
            cluster.run_until_quiet();
        }
        cluster
    }

    fn route(&mut self, actions: Vec<Action<u64>>) {
        for action in actions {
            if let Action::Send { to, message } = action {
                self.queue.push_back((to, message));
            }
        }
    }

    fn run_until_quiet(&mut self) {
        while let Some((to, message)) = self.queue.pop_front() {
            let index = (to.get() - 1) as usize;
            let actions = self.engines[index].step(Event::Incoming(message));
            self.route(actions);
        }
    }

    fn propose(&mut self, event: Event<u64>) {
        let actions = self.engines[0].step(event);
        self.route(actions);
        self.run_until_quiet();
    }
}

fn committed_entries(c: &mut Criterion) {
    let mut group = c.benchmark_group("three_node_commit_256_entries");
    group.throughput(Throughput::Elements(256));
    group.bench_function("single_proposals", |b| {
        b.iter_batched_ref(
            Cluster::elected,
            |cluster| {
                for command in 0..256u64 {
                    cluster.propose(Event::ClientProposal(black_box(command)));
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("batches_of_64", |b| {
        b.iter_batched_ref(
            Cluster::elected,
            |cluster| {
                for batch in 0..4u64 {
                    let commands: Vec<u64> = (batch * 64..(batch + 1) * 64).collect();
                    cluster.propose(Event::ClientProposalBatch(black_box(commands)));
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, committed_entries);
criterion_main!(benches);
