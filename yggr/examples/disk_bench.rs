//! Benchmarks of the durable parts: DiskStorage and TcpTransport.
//!
//! ```sh
//! # three nodes on DiskStorage + TcpTransport over loopback, 1/16/64/256 writers of
//! # 256-byte commands, 10 s each; prints the disk's serial append+fdatasync rate first
//! cargo run --release -p yggr --example disk_bench -- cluster --dir /var/tmp/yggr-bench
//! # append rate with 10 entries stored and with 10 M stored
//! cargo run --release -p yggr --example disk_bench -- append --dir /var/tmp/yggr-bench
//! # restart time for a 1 GB log next to a sequential read of its files (--cold: from the
//! # disk, dropping the page cache first; needs root)
//! cargo run --release -p yggr --example disk_bench -- restart --dir /var/tmp/yggr-bench --cold
//! ```
//!
//! Every figure is printed with its same-run reference: fdatasync latency for the cluster and
//! append benches, a plain sequential read of the same files for the restart bench.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, Subcommand};
use yggr::core::{EntryPayload, LogEntry, LogIndex, Term};
use yggr::{
    Bootstrap, Config, DecodeError, DiskStorage, Node, NodeId, StateMachine, Storage, StorageWrite,
    TcpTransport,
};

#[derive(Parser)]
struct Arguments {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Three nodes on DiskStorage + TcpTransport over loopback.
    Cluster {
        /// Where the nodes keep their data (emptied first).
        #[arg(long)]
        dir: PathBuf,
        /// Concurrent writers, one run per value.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        writers: Vec<usize>,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Command size in bytes.
        #[arg(long, default_value_t = 256)]
        command_bytes: usize,
    },
    /// Append rate with a short and a long log.
    Append {
        /// Where the storage lives (emptied first).
        #[arg(long)]
        dir: PathBuf,
        /// Entries in the long log.
        #[arg(long, default_value_t = 10_000_000)]
        long: u64,
        /// Appends measured per log.
        #[arg(long, default_value_t = 2_000)]
        appends: u64,
    },
    /// Recovery time of a large log.
    Restart {
        /// Where the storage lives (emptied first).
        #[arg(long)]
        dir: PathBuf,
        /// Log size in MiB.
        #[arg(long, default_value_t = 1024)]
        mebibytes: u64,
        /// Drop the page cache before each measurement (needs root), so every read comes
        /// from the disk.
        #[arg(long)]
        cold: bool,
    },
}

/// Counts what it applied; the bench measures replication and storage.
#[derive(Default)]
struct Sink {
    applied: u64,
}

impl StateMachine for Sink {
    type Command = Vec<u8>;
    type Response = u64;
    fn encode_command(command: &Vec<u8>) -> Vec<u8> {
        command.clone()
    }
    fn decode_command(bytes: &[u8]) -> Result<Vec<u8>, DecodeError> {
        Ok(bytes.to_vec())
    }
    fn apply(&mut self, _: Vec<u8>) -> u64 {
        self.applied += 1;
        self.applied
    }
}

fn fresh_dir(dir: &Path) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
}

/// Latency percentile `p` (0..=100) of sorted `samples`.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((samples.len() - 1) as f64 * p / 100.0).round() as usize;
    samples[rank]
}

fn micros(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// The disk's serial rate of appending `bytes` and calling fdatasync: the physical floor of
/// a durable write.
fn fdatasync_reference(dir: &Path, bytes: usize, seconds: f64) -> (f64, Duration, Duration) {
    let path = dir.join("fdatasync-reference");
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let record = vec![0x5a; bytes];
    let mut samples = Vec::new();
    let started = Instant::now();
    while started.elapsed().as_secs_f64() < seconds {
        let one = Instant::now();
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
        samples.push(one.elapsed());
    }
    let rate = samples.len() as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = fs::remove_file(&path);
    samples.sort_unstable();
    (rate, percentile(&samples, 50.0), percentile(&samples, 99.0))
}

fn free_addresses(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners
        .iter()
        .map(|listener| listener.local_addr().unwrap())
        .collect()
}

async fn start_cluster(dir: &Path) -> Vec<Node<Sink>> {
    let ids: Vec<NodeId> = (1..=3).map(|raw| NodeId::new(raw).unwrap()).collect();
    let addresses = free_addresses(ids.len());
    let mut nodes = Vec::new();
    for (position, me) in ids.iter().copied().enumerate() {
        let peers: Vec<(NodeId, SocketAddr)> = ids
            .iter()
            .copied()
            .zip(addresses.iter().copied())
            .filter(|(other, _)| *other != me)
            .collect();
        let storage = DiskStorage::open(dir.join(format!("node-{me}")))
            .await
            .unwrap();
        let transport = TcpTransport::start(me, addresses[position], peers.clone())
            .await
            .unwrap();
        let mut config = Config::new(me, peers.iter().map(|(other, _)| *other));
        config.tick_interval = Duration::from_millis(10);
        nodes.push(
            Node::start(config, Sink::default(), storage, transport)
                .await
                .unwrap(),
        );
    }
    nodes
}

async fn leader_of(nodes: &[Node<Sink>]) -> Node<Sink> {
    loop {
        if let Some(leader) = nodes.iter().find(|n| n.current_leader() == Some(n.id())) {
            return leader.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn cluster(dir: &Path, writers: &[usize], seconds: u64, command_bytes: usize) {
    fresh_dir(dir);
    let (rate, p50, p99) = fdatasync_reference(dir, command_bytes, 3.0);
    println!(
        "reference: serial {command_bytes}-byte append + fdatasync: {rate:.0}/s, p50 {:.0} µs, p99 {:.0} µs",
        micros(p50),
        micros(p99)
    );
    let nodes = start_cluster(dir).await;
    let leader = leader_of(&nodes).await;
    leader.write(vec![0; command_bytes]).await.unwrap();
    println!("| writers | writes/s | p50 | p99 | p50 ÷ fdatasync p50 |");
    println!("| --- | --- | --- | --- | --- |");
    for &count in writers {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let leader = leader.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let one = Instant::now();
                        // A leader change under load ends this writer's run, loudly: the
                        // figure of a run that lost its leader is not comparable.
                        if let Err(error) = leader.write(vec![0x42; command_bytes]).await {
                            eprintln!(
                                "a writer stopped: {error} (leadership changed during the run)"
                            );
                            break;
                        }
                        samples.push(one.elapsed());
                    }
                    samples
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        stop.store(true, Ordering::Relaxed);
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await.unwrap());
        }
        let elapsed = started.elapsed().as_secs_f64();
        samples.sort_unstable();
        let median = percentile(&samples, 50.0);
        println!(
            "| {count} | {:.0} | {:.2} ms | {:.2} ms | {:.2} |",
            samples.len() as f64 / elapsed,
            micros(median) / 1000.0,
            micros(percentile(&samples, 99.0)) / 1000.0,
            median.as_secs_f64() / p50.as_secs_f64()
        );
    }
    for node in nodes {
        node.shutdown().await.unwrap();
    }
}

fn entries(first: u64, count: u64, command_bytes: usize) -> Vec<LogEntry<Bytes>> {
    let command = Bytes::from(vec![0x17; command_bytes]);
    (first..first + count)
        .map(|index| LogEntry {
            index: LogIndex::new(index),
            term: Term::new(1),
            payload: EntryPayload::Command(command.clone()),
        })
        .collect()
}

async fn fresh_storage(dir: &Path) -> DiskStorage {
    fresh_dir(dir);
    let mut storage = DiskStorage::open(dir).await.unwrap();
    storage.load().await.unwrap();
    let me = NodeId::new(1).unwrap();
    storage
        .bootstrap(me, &yggr::core::Membership::from_voters([me]))
        .await
        .unwrap();
    // The entries written below are of term 1: a node must have reached it.
    storage
        .persist(vec![StorageWrite::HardState {
            current_term: Term::new(1),
            voted_for: Some(me),
        }])
        .await
        .unwrap();
    storage
}

/// Appends `count` entries in batches of `batch`.
async fn fill(storage: &mut DiskStorage, count: u64, batch: u64, command_bytes: usize) {
    let mut next = 1;
    while next <= count {
        let size = batch.min(count - next + 1);
        storage
            .persist(vec![StorageWrite::Entries(entries(
                next,
                size,
                command_bytes,
            ))])
            .await
            .unwrap();
        next += size;
    }
}

/// Appends one entry at a time, each durable, and returns the appends per second.
async fn append_rate(storage: &mut DiskStorage, next: u64, appends: u64) -> (f64, Duration) {
    let mut samples = Vec::with_capacity(appends as usize);
    let started = Instant::now();
    for index in next..next + appends {
        let one = Instant::now();
        storage
            .persist(vec![StorageWrite::Entries(entries(index, 1, 16))])
            .await
            .unwrap();
        samples.push(one.elapsed());
    }
    let rate = appends as f64 / started.elapsed().as_secs_f64();
    samples.sort_unstable();
    (rate, percentile(&samples, 50.0))
}

async fn append(dir: &Path, long: u64, appends: u64) {
    fresh_dir(dir);
    let (rate, p50, _) = fdatasync_reference(dir, 40, 3.0);
    println!(
        "reference: serial 40-byte append + fdatasync: {rate:.0}/s, p50 {:.0} µs",
        micros(p50)
    );
    for stored in [10, long] {
        let mut storage = fresh_storage(dir).await;
        let filled = Instant::now();
        fill(&mut storage, stored, 50_000, 16).await;
        let fill_time = filled.elapsed();
        let (rate, median) = append_rate(&mut storage, stored + 1, appends).await;
        println!(
            "{stored} entries stored (filled in {:.1} s, {} segments): {rate:.0} appends/s, p50 {:.0} µs",
            fill_time.as_secs_f64(),
            storage.segment_count(),
            micros(median)
        );
    }
    let _ = fs::remove_dir_all(dir);
}

/// Reads every segment whole into memory of its own, as anything that keeps the log in
/// memory must: the page faults of fresh memory included.
fn read_all_into_memory(dir: &Path) -> u64 {
    let mut kept = Vec::new();
    for entry in fs::read_dir(dir.join("log")).unwrap() {
        kept.push(fs::read(entry.unwrap().path()).unwrap());
    }
    kept.iter().map(|bytes| bytes.len() as u64).sum()
}

fn read_all(dir: &Path) -> u64 {
    let mut total = 0;
    let mut buffer = vec![0; 1 << 20];
    for entry in fs::read_dir(dir.join("log")).unwrap() {
        let mut file = File::open(entry.unwrap().path()).unwrap();
        loop {
            let read = file.read(&mut buffer).unwrap();
            if read == 0 {
                break;
            }
            total += read as u64;
        }
    }
    total
}

/// Empties the kernel's page cache, so the next read comes from the disk.
fn drop_page_cache() {
    let _ = std::process::Command::new("sync").status();
    fs::write("/proc/sys/vm/drop_caches", "3").expect("dropping the page cache needs root");
}

async fn restart(dir: &Path, mebibytes: u64, cold: bool) {
    let command_bytes = 4096 - 32;
    let count = mebibytes * (1 << 20) / 4096;
    {
        let mut storage = fresh_storage(dir).await;
        fill(&mut storage, count, 4096, command_bytes).await;
    }
    for round in 1..=3 {
        if cold {
            drop_page_cache();
        }
        let read = Instant::now();
        let bytes = read_all(dir);
        let read_time = read.elapsed();
        if cold {
            drop_page_cache();
        }
        let into_memory = Instant::now();
        read_all_into_memory(dir);
        let into_memory_time = into_memory.elapsed();
        if cold {
            drop_page_cache();
        }
        let opened = Instant::now();
        let storage = DiskStorage::open(dir).await.unwrap();
        let open_time = opened.elapsed();
        let me = NodeId::new(1).unwrap();
        let mut config = Config::new(me, []);
        config.bootstrap = Bootstrap::Recover;
        config.snapshot_hint_threshold_entries = 0;
        let network = yggr::LocalNetwork::new();
        let node = Node::start(config, Sink::default(), storage, network.transport(me))
            .await
            .unwrap();
        let start_time = opened.elapsed();
        node.shutdown().await.unwrap();
        println!(
            "round {round}: {:.0} MiB log, {count} entries: open to started node {:.2} s \
             (DiskStorage::open {:.2} s); reading the files through one buffer {:.2} s \
             (ratio {:.1}), into memory {:.2} s (ratio {:.1})",
            bytes as f64 / f64::from(1 << 20),
            start_time.as_secs_f64(),
            open_time.as_secs_f64(),
            read_time.as_secs_f64(),
            start_time.as_secs_f64() / read_time.as_secs_f64(),
            into_memory_time.as_secs_f64(),
            start_time.as_secs_f64() / into_memory_time.as_secs_f64()
        );
    }
    let _ = fs::remove_dir_all(dir);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    match Arguments::parse().bench {
        Bench::Cluster {
            dir,
            writers,
            seconds,
            command_bytes,
        } => cluster(&dir, &writers, seconds, command_bytes).await,
        Bench::Append { dir, long, appends } => append(&dir, long, appends).await,
        Bench::Restart {
            dir,
            mebibytes,
            cold,
        } => restart(&dir, mebibytes, cold).await,
    }
}
