//! `kv`: one node of a replicated key-value service that speaks the Redis protocol.
//!
//! ```text
//! kv --id 1 --data-dir data/1 --raft-addr 127.0.0.1:7001 --client-addr 127.0.0.1:6001 \
//!    --peer 2=127.0.0.1:7002,127.0.0.1:6002 --peer 3=127.0.0.1:7003,127.0.0.1:6003
//! ```
//!
//! How it starts: a data directory that holds state is recovered; otherwise `--join` starts
//! a member-to-be that waits for a leader to add it (`RAFT.ADDLEARNER` then `RAFT.PROMOTE`),
//! and `--peer` (or nothing, for a one-node cluster) founds a new cluster. SIGINT or SIGTERM
//! stops it cleanly: no new clients, the writes already accepted drain, then exit 0.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};
use yggr::{
    Bootstrap, Config, DiskStorage, Node, NodeId, NodeStartError, StoredState, TcpHandle,
    TcpTransport,
};
use yggr_examples::kv::addresses::{Preloaded, recover_addresses};
use yggr_examples::kv::commands::Service;
use yggr_examples::kv::membership::Standing;
use yggr_examples::kv::resp::Limits;
use yggr_examples::kv::server::{ServerOptions, serve};
use yggr_examples::kv::store::{AddressBook, KvCommand, KvStore, Member};

/// One node of a replicated key-value store that speaks the Redis protocol.
#[derive(Parser, Debug)]
#[command(
    name = "kv",
    version,
    about = "One node of a replicated key-value store that speaks the Redis protocol"
)]
struct Args {
    /// This node's id (a positive integer, unique in the cluster).
    #[arg(long)]
    id: u64,
    /// Where this node keeps its log, snapshots and vote.
    #[arg(long)]
    data_dir: PathBuf,
    /// The address other nodes reach this one at (Raft traffic).
    #[arg(long)]
    raft_addr: SocketAddr,
    /// The address Redis clients connect to.
    #[arg(long)]
    client_addr: SocketAddr,
    /// Another member, as `<id>=<raft_addr>,<client_addr>`: every other founder when founding
    /// a cluster; the current members when joining one. Repeat for each.
    #[arg(long = "peer", value_parser = parse_peer)]
    peers: Vec<(NodeId, Member)>,
    /// Start as a new member of a running cluster, added by its leader with
    /// `RAFT.ADDLEARNER` (then `RAFT.PROMOTE`).
    #[arg(long)]
    join: bool,
    /// Milliseconds per tick.
    #[arg(long, default_value_t = 50)]
    tick_ms: u64,
    /// Shortest election timeout, in ticks.
    #[arg(long, default_value_t = 10)]
    election_min_ticks: u64,
    /// Longest election timeout (exclusive), in ticks.
    #[arg(long, default_value_t = 20)]
    election_max_ticks: u64,
    /// Leader heartbeat period, in ticks.
    #[arg(long, default_value_t = 3)]
    heartbeat_ticks: u64,
    /// Hold writes up to this many ticks to batch them (0: send at once).
    #[arg(long, default_value_t = 0)]
    batch_delay_ticks: u64,
    /// Take a snapshot every this many applied entries (0: never). A snapshot writes the
    /// whole key space, so the default is large, as etcd's is.
    #[arg(long, default_value_t = 100_000)]
    snapshot_threshold: u64,
    /// Serve reads from a leader lease of this many ticks instead of a ReadIndex round (0:
    /// off). Only as safe as the bound on clock drift between the nodes.
    #[arg(long, default_value_t = 0)]
    lease_ticks: u64,
    /// The largest key or value a client may send.
    #[arg(long, default_value_t = 1 << 20)]
    max_bulk_bytes: usize,
    /// Client connections served at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
}

fn parse_peer(text: &str) -> Result<(NodeId, Member), String> {
    let usage = || format!("expected <id>=<raft_addr>,<client_addr>, got {text:?}");
    let (id, addresses) = text.split_once('=').ok_or_else(usage)?;
    let (raft, client) = addresses.split_once(',').ok_or_else(usage)?;
    let id = id
        .parse::<u64>()
        .ok()
        .and_then(NodeId::new)
        .ok_or_else(|| format!("peer id must be a positive integer, got {id:?}"))?;
    let raft = raft
        .parse()
        .map_err(|error| format!("peer {id} raft address {raft:?}: {error}"))?;
    let client = client
        .parse()
        .map_err(|error| format!("peer {id} client address {client:?}: {error}"))?;
    Ok((id, Member { raft, client }))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the runtime: {error}")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(reason) => fail(reason),
    }
}

fn fail(reason: String) -> ExitCode {
    eprintln!("kv: {reason}");
    ExitCode::FAILURE
}

async fn run(args: Args) -> Result<(), String> {
    let me = NodeId::new(args.id).ok_or("--id must be a positive integer")?;
    if args.peers.iter().any(|(id, _)| *id == me) {
        return Err(format!("--peer names this node's own id {me}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some((id, _)) = args.peers.iter().find(|(id, _)| !seen.insert(*id)) {
        return Err(format!("--peer names node {id} twice"));
    }
    if args.join && args.peers.is_empty() {
        return Err("--join needs --peer for the cluster's current members".to_string());
    }
    // Bind both ports first: a port in use should stop us before the storage is touched.
    let listener = TcpListener::bind(args.client_addr)
        .await
        .map_err(|error| format!("cannot listen for clients on {}: {error}", args.client_addr))?;
    let raft_peers: Vec<(NodeId, SocketAddr)> = args
        .peers
        .iter()
        .map(|(id, member)| (*id, member.raft))
        .collect();
    let transport = TcpTransport::start(me, args.raft_addr, raft_peers)
        .await
        .map_err(|error| format!("cannot listen for peers on {}: {error}", args.raft_addr))?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|error| format!("cannot create {}: {error}", args.data_dir.display()))?;
    let storage = DiskStorage::open(&args.data_dir).await.map_err(|error| {
        if error.kind() == std::io::ErrorKind::WouldBlock {
            format!(
                "{} is in use by another kv process (one data directory per node)",
                args.data_dir.display()
            )
        } else {
            format!("cannot open {}: {error}", args.data_dir.display())
        }
    })?;
    let bootstrap = if args.join {
        // Over a founder's state this is refused (JoinOverFoundingMember); over a joiner's
        // own state it recovers.
        Bootstrap::Join
    } else if storage.holds_state() {
        Bootstrap::Recover
    } else {
        let mut members: std::collections::BTreeSet<NodeId> =
            args.peers.iter().map(|(id, _)| *id).collect();
        members.insert(me);
        Bootstrap::NewCluster { members }
    };
    info!(target: "kv", node_id = me.get(), ?bootstrap, data_dir = %args.data_dir.display(), "starting");
    let storage = Preloaded::read(storage)
        .await
        .map_err(|error| format!("cannot read {}: {error}", args.data_dir.display()))?;
    let peers_handle = transport.handle();
    seed_addresses(me, storage.stored(), &peers_handle);
    let mut config = Config::new(me, []);
    config.bootstrap = bootstrap;
    config.tick_interval = Duration::from_millis(args.tick_ms.max(1));
    config.election_timeout_min_ticks = args.election_min_ticks;
    config.election_timeout_max_ticks = args.election_max_ticks;
    config.heartbeat_interval_ticks = args.heartbeat_ticks;
    config.max_batch_delay_ticks = args.batch_delay_ticks;
    config.snapshot_hint_threshold_entries = args.snapshot_threshold;
    config.lease_duration_ticks = args.lease_ticks;
    let book = AddressBook::default();
    let store = KvStore::new(me, book.clone(), Some(peers_handle));
    let node = Node::start(config, store, storage, transport)
        .await
        .map_err(|error| match error {
            NodeStartError::JoinOverFoundingMember => format!(
                "{} belongs to a founding member of a cluster: start it without --join",
                args.data_dir.display()
            ),
            NodeStartError::WrongNode { stored, .. } => format!(
                "{} belongs to node {stored}, not to --id {me}",
                args.data_dir.display()
            ),
            error => error.to_string(),
        })?;

    let (stop, stopped) = watch::channel(false);
    let options = ServerOptions {
        limits: Limits {
            max_bulk_bytes: args.max_bulk_bytes,
            max_command_bytes: 2 * args.max_bulk_bytes + (1 << 20),
            ..Limits::default()
        },
        max_connections: args.max_connections,
    };
    let mut known: Vec<(NodeId, Member)> = args.peers.clone();
    known.push((
        me,
        Member {
            raft: args.raft_addr,
            client: args.client_addr,
        },
    ));
    let service = Service::new(node.clone(), book.clone(), known.iter().copied().collect());
    let server = tokio::spawn(serve(listener, service.clone(), options, stopped.clone()));
    let watcher = tokio::spawn(watch_leadership(
        service,
        book,
        known,
        config_tick(args.tick_ms),
        stopped,
    ));
    info!(target: "kv", node_id = me.get(), client_addr = %args.client_addr, raft_addr = %args.raft_addr, "serving");

    wait_for_signal().await;
    info!(target: "kv", node_id = me.get(), "shutting down");
    let _ = stop.send(true);
    let connections = server.await.unwrap_or_default();
    let _ = watcher.await;
    let outcome = node.shutdown().await;
    // The commands that were running when the signal came have their answers now: let their
    // connections write them before the runtime goes.
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.join_all()).await;
    match outcome {
        Ok(()) => Ok(()),
        Err(error) => Err(format!("shutdown: {error}")),
    }
}

/// Gives the transport the address of every member the stored state names, before the node
/// starts: it applies nothing until a leader reports the commit index, and it can hear only a
/// leader its transport knows, one added after this node was founded too. What the log says
/// replaces a `--peer` flag for the same node, as applying it would.
fn seed_addresses(me: NodeId, stored: Option<&StoredState>, peers: &TcpHandle) {
    let Some(stored) = stored else {
        return;
    };
    let recovered = recover_addresses(stored);
    let mut seeded = 0;
    for (id, member) in recovered.members.iter().filter(|(id, _)| **id != me) {
        peers.add_peer(*id, member.raft);
        seeded += 1;
    }
    info!(target: "kv", node_id = me.get(), addresses = seeded, "recovered members' addresses from the stored snapshot and log");
    if recovered.undecodable > 0 {
        warn!(target: "kv", node_id = me.get(), skipped = recovered.undecodable, "stored address records that do not decode were skipped");
    }
}

fn config_tick(tick_ms: u64) -> Duration {
    Duration::from_millis(tick_ms.max(1))
}

/// Logs when this node becomes (or stops being) the leader, and as leader makes sure the
/// replicated address book names every member this node was told about, so that followers
/// can redirect clients to it. Every tick it also records the node's membership, which is how
/// the node later knows it was removed (and logs it when it was).
async fn watch_leadership(
    service: Service,
    book: AddressBook,
    known: Vec<(NodeId, Member)>,
    tick: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let node = service.node().clone();
    let mut leading = false;
    let mut was_removed = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        // A node that has stopped answers nothing: keep the last word on its membership.
        let removed = match service.observe_membership().await {
            Ok(standing) => standing == Standing::Removed,
            Err(_) => was_removed,
        };
        if removed != was_removed {
            was_removed = removed;
            if removed {
                warn!(target: "kv", node_id = node.id().get(), "this node was removed from the cluster: it answers clients with an error; stop it");
            } else {
                info!(target: "kv", node_id = node.id().get(), "this node is a member again");
            }
        }
        let now_leading = node.current_leader() == Some(node.id());
        if now_leading != leading {
            leading = now_leading;
            if leading {
                let term = node
                    .status()
                    .await
                    .map(|status| status.current_term.get())
                    .unwrap_or(0);
                info!(target: "kv", node_id = node.id().get(), term, "this node is now the leader");
            } else {
                info!(target: "kv", node_id = node.id().get(), "this node is no longer the leader");
            }
        }
        if !leading {
            continue;
        }
        // Only members: a node removed since it was named on the command line stays out.
        let Ok(status) = node.status().await else {
            continue;
        };
        for (id, member) in known
            .iter()
            .filter(|(id, _)| status.membership.contains(*id))
        {
            let recorded = book
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(id)
                .copied();
            if recorded.is_none() {
                let command = KvCommand::SetMember {
                    id: *id,
                    member: *member,
                };
                if let Err(error) = node.write(command).await {
                    warn!(target: "kv", %error, member = id.get(), "could not record a member's addresses yet");
                }
            }
        }
    }
}

async fn wait_for_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
