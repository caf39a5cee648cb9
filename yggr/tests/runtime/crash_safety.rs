//! Crash safety with real processes: a child process writes through a Node on DiskStorage
//! and reports each acknowledged write on stdout; the test kills it with SIGKILL at a random
//! moment, many times over the same directory. After each kill, every acknowledged write must
//! be in the log, the log must open cleanly and hold the writes in order, and the next child
//! must recover and go on.
//!
//! The child is this same test binary, re-run with only `child_writes_until_killed` selected
//! and the directory in an environment variable.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr::core::EntryPayload;
use yggr::{Bootstrap, Config, DiskStorage, Node, Storage};

use crate::common::{Recorder, id};

const DIR_VARIABLE: &str = "YGGR_CRASH_CHILD_DIR";
const CHILD_TEST: &str = "crash_safety::child_writes_until_killed";

/// The child: writes 1, 2, 3, ... (continuing after what an earlier child stored) until it
/// is killed, printing `ack N` once write N is acknowledged.
#[test]
#[ignore = "run as a child process by acknowledged_writes_survive_sigkill"]
fn child_writes_until_killed() {
    let Ok(dir) = std::env::var(DIR_VARIABLE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let storage = DiskStorage::open(&dir).await.unwrap();
        let me = id(1);
        let mut config = Config::new(me, []);
        config.bootstrap = Bootstrap::NewCluster {
            members: [me].into(),
        };
        config.tick_interval = Duration::from_millis(5);
        config.snapshot_hint_threshold_entries = 0;
        let node = Node::start(
            config,
            Recorder::default(),
            storage,
            yggr::LocalNetwork::new().transport(me),
        )
        .await
        .unwrap();
        // A lone node elects itself after an election timeout.
        while node.current_leader() != Some(me) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let start = node
            .read_linearizable(|state: &Recorder| state.applied.iter().copied().max().unwrap_or(0))
            .await
            .unwrap();
        let mut next = start + 1;
        loop {
            // Several writers at once, so kills land in the middle of group commits too.
            let batch: Vec<_> = (next..next + 8)
                .map(|command| {
                    let node = node.clone();
                    tokio::spawn(async move { (command, node.write(command).await) })
                })
                .collect();
            for write in batch {
                let (command, result) = write.await.unwrap();
                result.unwrap();
                println!("ack {command}");
            }
            next += 8;
        }
    });
}

/// The commands of every entry in the log at `dir`, in log order.
async fn stored_commands(dir: &Path) -> Vec<u64> {
    let mut storage = DiskStorage::open(dir).await.unwrap();
    let state = storage
        .load()
        .await
        .unwrap()
        .expect("the child bootstrapped");
    assert!(state.snapshot.is_none(), "snapshots are off in the child");
    let mut commands = Vec::new();
    for (expected_index, entry) in (1..).zip(state.log.iter()) {
        assert_eq!(entry.index.get(), expected_index, "the log has no gaps");
        if let EntryPayload::Command(bytes) = &entry.payload {
            commands.push(u64::from_le_bytes(bytes[..].try_into().unwrap()));
        }
    }
    commands
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut acknowledged = 0u64;
    for round in 0..12 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                CHILD_TEST,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DIR_VARIABLE, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Kill after a random number of acknowledgements (some rounds before the first).
        let kill_after: u64 = rng.random_range(0..200);
        let mut lines = BufReader::new(stdout).lines();
        let mut seen = 0;
        while seen < kill_after {
            let Some(Ok(line)) = lines.next() else { break };
            if let Some(number) = line.strip_prefix("ack ") {
                acknowledged = acknowledged.max(number.parse().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap();
        // Acknowledgements already in the pipe when the kill landed count too.
        for line in lines.map_while(Result::ok) {
            if let Some(number) = line.strip_prefix("ack ") {
                acknowledged = acknowledged.max(number.parse().unwrap());
            }
        }
        child.wait().unwrap();
        let commands = runtime.block_on(stored_commands(dir.path()));
        for command in 1..=acknowledged {
            assert!(
                commands.contains(&command),
                "round {round}: write {command} was acknowledged but is not in the log"
            );
        }
        let mut sorted = commands.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted.len(),
            commands.len(),
            "round {round}: a command is stored twice"
        );
    }
    assert!(
        acknowledged > 100,
        "only {acknowledged} writes in 12 rounds"
    );
}
