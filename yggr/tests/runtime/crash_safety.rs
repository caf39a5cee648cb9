//! Crash safety with real processes: a child process writes through a Node on DiskStorage
//! and reports each acknowledged write on stdout; the test kills it with SIGKILL at a random
//! moment, many times over the same directory. After each kill, every write a child
//! acknowledged must be in the log, the log must open cleanly, hold no command twice and hold
//! the commands in the order they could have been written, and the next child must recover
//! and go on.
//!
//! The child is this same test binary, re-run with only `child_writes_until_killed` selected
//! and the directory in an environment variable.
//!
//! The child issues its writes in batches of [`BATCH`] at once, so the writes of one batch
//! reach the log in any order, and a kill can leave any subset of the batch in flight stored.
//! The next child starts after the highest command stored, so the unstored commands of a
//! batch cut short by a kill are never written by anyone: the parent demands exactly the
//! commands a child acknowledged, never a whole range up to the highest acknowledgement.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
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
/// How many writes a child issues at once. The next batch starts only after every write of
/// this one was acknowledged.
const BATCH: u64 = 8;
const SIGKILL: i32 = 9;

/// One line of the child's report on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildLine {
    /// The first command the child is about to issue, printed before any write.
    Start(u64),
    /// The write of this command returned Ok.
    Ack(u64),
}

impl ChildLine {
    /// Writes the line with a newline before it, in one `write`. The test harness prints
    /// `test <name> ... ` without ending its line before the child's first output; the
    /// leading newline keeps the child's line off the harness's. A single small `write` to a
    /// pipe is atomic, so a kill never leaves half a line.
    fn write_to(self, out: &mut impl Write) -> std::io::Result<()> {
        let text = match self {
            ChildLine::Start(command) => format!("\nstart {command}\n"),
            ChildLine::Ack(command) => format!("\nack {command}\n"),
        };
        out.write_all(text.as_bytes())?;
        out.flush()
    }

    /// Parses one line read with its newline. Anything else is `None`: the harness's own
    /// lines, blank lines, and a last line without its newline (which the atomic writes rule
    /// out, but which could only be guessed at).
    fn parse(line: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(line.strip_suffix(b"\n")?).ok()?;
        let (word, number) = text.split_once(' ')?;
        let command = number.parse().ok()?;
        match word {
            "start" => Some(ChildLine::Start(command)),
            "ack" => Some(ChildLine::Ack(command)),
            _ => None,
        }
    }
}

/// What the parent saw of one child.
#[derive(Debug, Default)]
struct ChildRun {
    /// The child's first command; `None` if it was killed before it issued any write.
    first_command: Option<u64>,
    /// The commands the child acknowledged, in the order it printed them.
    acknowledged: Vec<u64>,
}

impl ChildRun {
    /// Reads the child's report until it holds `limit` acknowledgements or the output ends
    /// (the child was killed, or died).
    fn read_from(&mut self, stdout: &mut impl BufRead, limit: usize) {
        let mut line = Vec::new();
        while self.acknowledged.len() < limit {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            match ChildLine::parse(&line) {
                Some(ChildLine::Start(command)) => {
                    assert_eq!(self.first_command, None, "a child starts once");
                    self.first_command = Some(command);
                }
                Some(ChildLine::Ack(command)) => self.acknowledged.push(command),
                None => {}
            }
        }
    }
}

/// The child: writes 1, 2, 3, ... (continuing after what an earlier child stored) until it
/// is killed, in batches of [`BATCH`] concurrent writes, printing `start N` before its first
/// write and `ack N` once write N is acknowledged.
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
        let mut stdout = std::io::stdout();
        let mut next = start + 1;
        ChildLine::Start(next).write_to(&mut stdout).unwrap();
        loop {
            // Several writers at once, so kills land in the middle of group commits too.
            let batch: Vec<_> = (next..next + BATCH)
                .map(|command| {
                    let node = node.clone();
                    tokio::spawn(async move { (command, node.write(command).await) })
                })
                .collect();
            for write in batch {
                let (command, result) = write.await.unwrap();
                result.unwrap();
                ChildLine::Ack(command).write_to(&mut stdout).unwrap();
            }
            next += BATCH;
        }
    });
}

/// The commands of every entry in the log at `dir`, in log order. A directory the first
/// child never got to write to holds none.
async fn stored_commands(dir: &Path) -> Vec<u64> {
    let mut storage = DiskStorage::open(dir).await.unwrap();
    let Some(state) = storage.load().await.unwrap() else {
        return Vec::new();
    };
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

/// Checks the log (its commands in log order) against what every child so far reported.
///
/// # Errors
///
/// The first rule the log or the reports break, in words.
fn check_log(log: &[u64], runs: &[ChildRun]) -> Result<(), String> {
    let mut sorted = log.to_vec();
    sorted.sort_unstable();
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0] == pair[1]) {
        return Err(format!("command {} is stored twice", pair[0]));
    }
    for (child, run) in runs.iter().enumerate() {
        check_acknowledgements(child, run)?;
        for command in &run.acknowledged {
            if sorted.binary_search(command).is_err() {
                return Err(format!(
                    "child {child}: write {command} was acknowledged but is not in the log"
                ));
            }
        }
        if let Some(first) = run.first_command {
            // The child read the highest applied command before it started, and everything
            // stored was applied then (a lone leader commits its whole log).
            let highest_before = sorted
                .iter()
                .copied()
                .filter(|&stored| stored < first)
                .max();
            if first != highest_before.unwrap_or(0) + 1 {
                return Err(format!(
                    "child {child} started at {first} after {highest_before:?} was stored"
                ));
            }
        }
    }
    check_batch_order(log, runs)
}

/// A child prints its acknowledgements in the order it issued the writes and stops at the
/// first one it has not seen return, so they run without a hole from its first command. A
/// hole here means the parent lost one of the child's lines.
fn check_acknowledgements(child: usize, run: &ChildRun) -> Result<(), String> {
    let first = run.first_command.unwrap_or(1);
    let expected = first..first + run.acknowledged.len() as u64;
    let acknowledged_before_starting = run.first_command.is_none() && !run.acknowledged.is_empty();
    if acknowledged_before_starting || !run.acknowledged.iter().copied().eq(expected) {
        return Err(format!(
            "child {child} (first command {:?}) acknowledged {:?}: not a run from its first command",
            run.first_command, run.acknowledged
        ));
    }
    Ok(())
}

/// What "no gap" means for concurrent writes. A batch is issued only once every write of the
/// one before it was acknowledged, so in log order: the batches of a child come one after
/// the other, each whole (in any order inside) except a child's last one, which the kill may
/// cut short; and a child's writes come after those of every child before it.
fn check_batch_order(log: &[u64], runs: &[ChildRun]) -> Result<(), String> {
    let starts: Vec<(usize, u64)> = runs
        .iter()
        .enumerate()
        .filter_map(|(child, run)| Some((child, run.first_command?)))
        .collect();
    let mut current: Option<((usize, u64), u64)> = None;
    for &command in log {
        let Some(&(child, first)) = starts.iter().rev().find(|(_, first)| *first <= command) else {
            return Err(format!("command {command} was stored but never issued"));
        };
        let batch = (child, (command - first) / BATCH);
        let follows = match current {
            None => batch.1 == 0,
            Some((previous, _)) if previous == batch => true,
            Some(((previous_child, previous_batch), stored)) => {
                (previous_child == child && batch.1 == previous_batch + 1 && stored == BATCH)
                    || (previous_child < child && batch.1 == 0)
            }
        };
        if !follows {
            return Err(format!(
                "command {command} (child {child}, batch {}) is stored after {current:?} \
                 ((child, batch), commands stored)",
                batch.1
            ));
        }
        let stored = match current {
            Some((previous, stored)) if previous == batch => stored + 1,
            _ => 1,
        };
        current = Some((batch, stored));
    }
    Ok(())
}

#[test]
fn acknowledged_writes_survive_sigkill_at_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5eed);
    let mut runs: Vec<ChildRun> = Vec::new();
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
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // Kill after a random number of acknowledgements (some rounds before the first).
        let kill_after = rng.random_range(0..200);
        let mut run = ChildRun::default();
        run.read_from(&mut stdout, kill_after);
        child.kill().unwrap();
        // Acknowledgements already in the pipe when the kill landed count too.
        run.read_from(&mut stdout, usize::MAX);
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "round {round}: the child ended on its own ({status}); its stderr is above"
        );
        runs.push(run);
        let log = runtime.block_on(stored_commands(dir.path()));
        if let Err(broken) = check_log(&log, &runs) {
            panic!("round {round}: {broken}\nlog: {log:?}\nchildren: {runs:?}");
        }
    }
    let acknowledged: usize = runs.iter().map(|run| run.acknowledged.len()).sum();
    assert!(
        acknowledged > 100,
        "only {acknowledged} writes in 12 rounds"
    );
}

/// What a child's stdout holds: the harness's own lines, then the child's report.
fn child_output(lines: &[ChildLine]) -> Vec<u8> {
    let mut out = format!("\nrunning 1 test\ntest {CHILD_TEST} ... ").into_bytes();
    for line in lines {
        line.write_to(&mut out).unwrap();
    }
    out
}

fn run_of(first_command: u64, acknowledged: std::ops::RangeInclusive<u64>) -> ChildRun {
    ChildRun {
        first_command: Some(first_command),
        acknowledged: acknowledged.collect(),
    }
}

#[test]
fn a_childs_first_acknowledgement_is_counted_after_the_harness_line() {
    let output = child_output(&[ChildLine::Start(1), ChildLine::Ack(1), ChildLine::Ack(2)]);
    let mut run = ChildRun::default();
    run.read_from(&mut &output[..], usize::MAX);
    assert_eq!(run.first_command, Some(1));
    assert_eq!(run.acknowledged, [1, 2]);
}

#[test]
fn the_unwritten_rest_of_a_batch_cut_short_by_a_kill_is_not_demanded() {
    // The first child stored batches 1..=16 whole and only 18 of 17..=24, then was killed;
    // the second child started after 18 and acknowledged its first batch.
    let mut log: Vec<u64> = (1..=16).collect();
    log.push(18);
    log.extend([20, 19, 22, 21, 23, 24, 26, 25]);
    let runs = [run_of(1, 1..=16), run_of(19, 19..=26)];
    assert_eq!(check_log(&log, &runs), Ok(()));
}

#[test]
fn an_acknowledged_write_missing_from_the_log_is_reported() {
    let log: Vec<u64> = (1..=16).filter(|&command| command != 11).collect();
    let runs = [run_of(1, 1..=12)];
    let broken = check_log(&log, &runs).unwrap_err();
    assert!(broken.contains("write 11 was acknowledged"), "{broken}");
}

#[test]
fn a_batch_stored_before_the_previous_one_is_whole_is_reported() {
    // 9 of the second batch is stored although 5 of the first never was: the second batch
    // cannot have been issued.
    let log: Vec<u64> = (1..=9).filter(|&command| command != 5).collect();
    let runs = [run_of(1, 1..=4)];
    let broken = check_log(&log, &runs).unwrap_err();
    assert!(broken.contains("command 9"), "{broken}");
}

#[test]
fn a_command_stored_twice_is_reported() {
    let log = [1, 2, 3, 2];
    let runs = [run_of(1, 1..=3)];
    let broken = check_log(&log, &runs).unwrap_err();
    assert!(broken.contains("stored twice"), "{broken}");
}
