//! Write (and read) throughput of three nodes in one process: MemStorage, LocalNetwork, an
//! empty state machine and empty payloads; `-c` concurrent clients each writing to the leader
//! until `-n` writes are done in total. Shaped like openraft's `benchmarks/minimal`, so the
//! figures compare directly.
//!
//! ```sh
//! cargo run --release -p yggr --example bench -- -c 256 -n 1000000
//! cargo run --release -p yggr --example bench -- -c 64 -n 1000000 --reads
//! ```
//!
//! Options: `-c CLIENTS` (default 64), `-n OPERATIONS` (default 100000), `--workers N` worker
//! threads of the servers' runtime (default 2), `--client-workers N` worker threads of the
//! clients' own runtime (default 1; the shape openraft's bench uses), `--reads` to measure
//! linearizable reads instead of writes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use yggr::{Config, DecodeError, LocalNetwork, MemStorage, Node, NodeId, StateMachine};

/// A state machine that does nothing: the bench measures the replication path.
#[derive(Default)]
struct Empty;

impl StateMachine for Empty {
    type Command = ();
    type Response = ();

    fn encode_command(_: &()) -> Vec<u8> {
        Vec::new()
    }

    fn decode_command(_: &[u8]) -> Result<(), DecodeError> {
        Ok(())
    }

    fn apply(&mut self, (): ()) {}
}

struct Options {
    clients: u64,
    operations: u64,
    workers: usize,
    client_workers: usize,
    reads: bool,
}

fn options() -> Options {
    let mut options = Options {
        clients: 64,
        operations: 100_000,
        workers: 2,
        client_workers: 1,
        reads: false,
    };
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let mut position = 0;
    while position < arguments.len() {
        let value = || {
            arguments
                .get(position + 1)
                .and_then(|value| value.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("{} needs a number", arguments[position]))
        };
        match arguments[position].as_str() {
            "-c" => options.clients = value(),
            "-n" => options.operations = value(),
            "--workers" => options.workers = value() as usize,
            "--client-workers" => options.client_workers = value() as usize,
            "--reads" => {
                options.reads = true;
                position += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        position += 2;
    }
    options
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // `--client-workers 0` runs the clients on the servers' runtime.
    let clients = (options.client_workers > 0).then(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(options.client_workers)
            .enable_all()
            .build()
            .expect("the clients' runtime")
    });
    let handle = clients.as_ref().map_or_else(
        || runtime.handle().clone(),
        |clients| clients.handle().clone(),
    );
    runtime.block_on(run(options, handle));
}

/// The same-run reference: how long one request takes to reach a task on the servers'
/// runtime from a client task and come back, with nothing else to do. Every write makes
/// several such hops (client to leader, leader to followers and back, to the apply task, to
/// the client), so at one client this bounds what any design can reach on the machine.
async fn bare_round_trip(client_runtime: &tokio::runtime::Handle) -> Duration {
    let (requests, mut incoming) = tokio::sync::mpsc::channel::<oneshot::Sender<()>>(16);
    tokio::spawn(async move {
        while let Some(reply) = incoming.recv().await {
            let _ = reply.send(());
        }
    });
    const ROUNDS: u32 = 20_000;
    client_runtime
        .spawn(async move {
            let started = Instant::now();
            for _ in 0..ROUNDS {
                let (reply, answer) = oneshot::channel();
                requests.send(reply).await.expect("the echo task runs");
                answer.await.expect("the echo task answers");
            }
            started.elapsed() / ROUNDS
        })
        .await
        .expect("the reference task")
}

async fn run(options: Options, client_runtime: tokio::runtime::Handle) {
    let reference = bare_round_trip(&client_runtime).await;
    let network = LocalNetwork::new();
    let ids: Vec<NodeId> = (1..=3).filter_map(NodeId::new).collect();
    let mut nodes = Vec::new();
    for me in &ids {
        let mut config = Config::new(*me, ids.iter().copied().filter(|other| other != me));
        config.tick_interval = Duration::from_millis(10);
        config.max_pending_proposals = 1 << 20;
        config.snapshot_hint_threshold_entries = 0;
        config.random_seed = Some(me.get());
        let node = Node::start(config, Empty, MemStorage::new(), network.transport(*me))
            .await
            .expect("the node starts");
        nodes.push(node);
    }
    let leader = loop {
        if let Some(leader) = nodes
            .iter()
            .find(|node| node.current_leader() == Some(node.id()))
        {
            break leader.clone();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // Warm up until the leader has committed in its term.
    leader.write(()).await.expect("a first write");

    let remaining = Arc::new(AtomicU64::new(options.operations));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..options.clients {
        let leader = leader.clone();
        let remaining = Arc::clone(&remaining);
        let reads = options.reads;
        clients.push(client_runtime.spawn(async move {
            while remaining
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    left.checked_sub(1)
                })
                .is_ok()
            {
                if reads {
                    leader
                        .read_linearizable(|_: &Empty| ())
                        .await
                        .expect("a read");
                } else {
                    leader.write(()).await.expect("a write");
                }
            }
        }));
    }
    for client in clients {
        client.await.expect("a client");
    }
    let elapsed = started.elapsed();
    let rate = options.operations as f64 / elapsed.as_secs_f64();
    let what = if options.reads { "reads" } else { "writes" };
    println!(
        "{} {what} by {} clients in {:.3} s: {:.0} {what}/s ({:.2} µs each); reference: a bare \
         client-to-server round trip takes {:.1} µs here",
        options.operations,
        options.clients,
        elapsed.as_secs_f64(),
        rate,
        elapsed.as_secs_f64() * 1e6 / options.operations as f64,
        reference.as_secs_f64() * 1e6
    );
    for node in nodes {
        let _ = node.shutdown().await;
    }
}
