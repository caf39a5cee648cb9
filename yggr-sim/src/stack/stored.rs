//! What every node's storage holds, seen from between the node and its `DiskStorage`: each
//! log a node loaded at a start and each batch it made durable. Two rules are checked over
//! all of them, across nodes and restarts:
//!
//! - **Log Matching** (§5.3): an entry is made once, by the leader of its term, so every
//!   stored log that holds index `i` at term `t` holds the same payload there and follows the
//!   same term at `i - 1` (the snapshot's last term, for the first entry after a snapshot). A
//!   storage that splices a log (a crash in the middle of an install leaving a stale suffix
//!   behind the new snapshot, say) breaks it, though the node may never apply the spliced
//!   entries: they wait, uncommitted, for a leader whose log shares their terms.
//! - **Crashes in the middle of installs that replace a log**: when a batch stores a snapshot
//!   over a log that does not continue it (the log holds a different term at the snapshot's
//!   index, and entries past it), the power goes out a few file operations into it, so that a
//!   crash may land between the removals of the old log's segments. Such installs are rare in
//!   cluster runs (a few per hundred runs) and their middle is short; the crash-point sweeps
//!   (`crash_points`) are what try every operation of them.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use yggr::simulation::SimulatedHost;
use yggr::storage::{Storage, StorageWrite, StoredState};
use yggr::{DiskStorage, NodeId};
use yggr_core::{EntryPayload, LogEntry, Membership};

use bytes::Bytes;

use super::digest::Fnv64;

/// What the stored logs exercised, for the run's coverage report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageCounts {
    /// Snapshots stored over a log that did not continue them (the whole log replaced).
    pub installs_replacing_a_log: u64,
    /// Of those, installs into which a power loss was planned.
    pub power_losses_planned_in_installs: u64,
    /// Log positions (index and term) seen stored, on any node, and held to Log Matching.
    pub positions_checked: u64,
}

/// One position of a stored log: what it holds and what precedes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    /// The term of the entry before it (the snapshot's last term after a snapshot), if known.
    previous_term: Option<u64>,
    /// A digest of the entry's payload.
    payload: u64,
    /// The node that first stored it, and in which of its lives, for the report.
    first_seen: (NodeId, u32),
}

/// One node's stored log as its last durable batch left it: the snapshot's last index and
/// term, and the term of every entry after it.
#[derive(Clone, Debug, Default)]
struct Shadow {
    snapshot: (u64, u64),
    terms: BTreeMap<u64, u64>,
}

impl Shadow {
    fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.snapshot.0 && index > 0 {
            return Some(self.snapshot.1);
        }
        self.terms.get(&index).copied()
    }

    /// Whether storing a snapshot through `index` at `term` replaces this log: it holds
    /// entries past `index` and another term (or none) at it.
    fn replaced_by(&self, index: u64, term: u64) -> bool {
        self.terms.range(index + 1..).next().is_some() && self.term_at(index) != Some(term)
    }

    /// Stores a snapshot as `DiskStorage` does: entries it covers go; the rest stay only if
    /// the log holds the snapshot's last entry with its term.
    fn store_snapshot(&mut self, index: u64, term: u64) {
        if self.term_at(index) == Some(term) {
            self.terms = self.terms.split_off(&(index + 1));
        } else {
            self.terms.clear();
        }
        self.snapshot = (index, term);
    }
}

/// Every node's stored log, and the positions seen stored on any node.
pub(crate) struct StoredLogs {
    positions: BTreeMap<(u64, u64), Position>,
    shadows: BTreeMap<NodeId, Shadow>,
    /// The first rule broken, if any.
    pub(crate) violation: Option<String>,
    pub(crate) counts: StorageCounts,
    /// Whether power losses may be planned into installs (the faults phase, with crashes).
    pub(crate) plan_power_losses: bool,
    draw: ChaCha8Rng,
}

impl StoredLogs {
    pub(crate) fn new(seed: u64) -> StoredLogs {
        StoredLogs {
            positions: BTreeMap::new(),
            shadows: BTreeMap::new(),
            violation: None,
            counts: StorageCounts::default(),
            plan_power_losses: false,
            draw: ChaCha8Rng::seed_from_u64(seed ^ 0x570_4ed),
        }
    }

    /// `node` loaded `stored` at the start of its `life`-th run.
    pub(crate) fn loaded(&mut self, node: NodeId, life: u32, stored: Option<&StoredState>) {
        let mut shadow = Shadow::default();
        if let Some(stored) = stored {
            if let Some(snapshot) = &stored.snapshot {
                shadow.snapshot = (
                    snapshot.last_included_index.get(),
                    snapshot.last_included_term.get(),
                );
            }
            for entry in &stored.log {
                self.hold(
                    &mut shadow,
                    node,
                    life,
                    entry.index.get(),
                    entry.term.get(),
                    payload_digest(entry),
                );
            }
        }
        self.shadows.insert(node, shadow);
    }

    /// Whether storing `writes` on `node` replaces its log with a snapshot; counts it.
    fn replaces_log(&mut self, node: NodeId, writes: &[StorageWrite]) -> bool {
        let Some(shadow) = self.shadows.get(&node) else {
            return false;
        };
        let replaces = writes.iter().any(|write| match write {
            StorageWrite::Snapshot(snapshot) => shadow.replaced_by(
                snapshot.last_included_index.get(),
                snapshot.last_included_term.get(),
            ),
            _ => false,
        });
        if replaces {
            self.counts.installs_replacing_a_log += 1;
        }
        replaces
    }

    /// `node` made `writes` durable during its `life`-th run.
    fn persisted(&mut self, node: NodeId, life: u32, writes: &[Summary]) {
        let mut shadow = self.shadows.remove(&node).unwrap_or_default();
        for write in writes {
            match write {
                Summary::Entries(entries) => {
                    if let Some(&(first, _, _)) = entries.first() {
                        shadow.terms.split_off(&first);
                    }
                    for &(index, term, payload) in entries {
                        self.hold(&mut shadow, node, life, index, term, payload);
                    }
                }
                Summary::Snapshot { index, term } => shadow.store_snapshot(*index, *term),
            }
        }
        self.shadows.insert(node, shadow);
    }

    /// Appends `index` at `term` to `shadow`, holding it to what every other log stored there.
    fn hold(
        &mut self,
        shadow: &mut Shadow,
        node: NodeId,
        life: u32,
        index: u64,
        term: u64,
        payload: u64,
    ) {
        let previous_term = index.checked_sub(1).and_then(|previous| {
            if previous == 0 {
                Some(0)
            } else {
                shadow.term_at(previous)
            }
        });
        shadow.terms.insert(index, term);
        self.counts.positions_checked += 1;
        let seen = Position {
            previous_term,
            payload,
            first_seen: (node, life),
        };
        let Some(first) = self.positions.get(&(index, term)).copied() else {
            self.positions.insert((index, term), seen);
            return;
        };
        if self.violation.is_some() {
            return;
        }
        let (other, other_life) = first.first_seen;
        if first.payload != payload {
            self.violation = Some(format!(
                "Log Matching: node {node} (start {life}) stores a different entry at index {index}, term {term} than node {other} (start {other_life}) stored there"
            ));
        } else if let (Some(before), Some(now)) = (first.previous_term, previous_term)
            && before != now
        {
            self.violation = Some(format!(
                "Log Matching: node {node} (start {life}) stores index {index}, term {term} after an entry of term {now}; node {other} (start {other_life}) stored it after term {before} (a log spliced from two histories)"
            ));
        }
    }
}

/// What a batch stored, kept small: each entry's index, term and payload digest.
enum Summary {
    Entries(Vec<(u64, u64, u64)>),
    Snapshot { index: u64, term: u64 },
}

fn summarize(writes: &[StorageWrite]) -> Vec<Summary> {
    writes
        .iter()
        .filter_map(|write| match write {
            StorageWrite::HardState { .. } => None,
            StorageWrite::Entries(entries) => Some(Summary::Entries(
                entries
                    .iter()
                    .map(|entry| (entry.index.get(), entry.term.get(), payload_digest(entry)))
                    .collect(),
            )),
            StorageWrite::Snapshot(snapshot) => Some(Summary::Snapshot {
                index: snapshot.last_included_index.get(),
                term: snapshot.last_included_term.get(),
            }),
        })
        .collect()
}

fn payload_digest(entry: &LogEntry<Bytes>) -> u64 {
    let mut digest = Fnv64::new();
    match &entry.payload {
        EntryPayload::Noop => 0u8.hash(&mut digest),
        EntryPayload::Command(bytes) => {
            1u8.hash(&mut digest);
            bytes.as_ref().hash(&mut digest);
        }
        EntryPayload::ConfigChange { change, membership } => {
            2u8.hash(&mut digest);
            format!("{change:?}").hash(&mut digest);
            membership_digest(membership).hash(&mut digest);
        }
    }
    digest.finish()
}

fn membership_digest(membership: &Membership) -> String {
    format!("{membership:?}")
}

/// The node's `DiskStorage`, with what it loads and stores shown to [`StoredLogs`], and power
/// losses planned into installs that replace a log.
pub(crate) struct Recorded {
    inner: DiskStorage,
    node: NodeId,
    life: u32,
    host: SimulatedHost,
    logs: Arc<Mutex<StoredLogs>>,
}

impl Recorded {
    pub(crate) fn new(
        inner: DiskStorage,
        node: NodeId,
        life: u32,
        host: SimulatedHost,
        logs: Arc<Mutex<StoredLogs>>,
    ) -> Recorded {
        Recorded {
            inner,
            node,
            life,
            host,
            logs,
        }
    }

    fn logs(&self) -> std::sync::MutexGuard<'_, StoredLogs> {
        self.logs
            .lock()
            .expect("the stored logs' lock is never poisoned")
    }
}

impl Storage for Recorded {
    type Error = <DiskStorage as Storage>::Error;

    async fn load(&mut self) -> Result<Option<StoredState>, Self::Error> {
        let stored = self.inner.load().await?;
        self.logs().loaded(self.node, self.life, stored.as_ref());
        Ok(stored)
    }

    async fn bootstrap(
        &mut self,
        node_id: NodeId,
        founding: &Membership,
    ) -> Result<(), Self::Error> {
        self.inner.bootstrap(node_id, founding).await
    }

    fn persist(
        &mut self,
        writes: Vec<StorageWrite>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send {
        let summary = summarize(&writes);
        {
            let mut logs = self.logs();
            if logs.replaces_log(self.node, &writes) && logs.plan_power_losses {
                // A snapshot file written, synced and renamed takes a handful of operations;
                // each old segment then takes a rename and a directory sync.
                let operations = logs.draw.random_range(2..40);
                logs.counts.power_losses_planned_in_installs += 1;
                self.host.lose_power_after(operations);
            }
        }
        let (node, life, logs) = (self.node, self.life, self.logs.clone());
        let persisted = self.inner.persist(writes);
        async move {
            persisted.await?;
            logs.lock()
                .expect("the stored logs' lock is never poisoned")
                .persisted(node, life, &summary);
            Ok(())
        }
    }

    fn incarnation(&self) -> Option<u64> {
        self.inner.incarnation()
    }

    fn prepare_snapshot(
        &self,
        snapshot: &yggr_core::RecoveredSnapshot,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.inner.prepare_snapshot(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use yggr_core::{LogIndex, RecoveredSnapshot, Term};

    use super::*;

    fn node(id: u64) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn entry(index: u64, term: u64, command: &'static [u8]) -> LogEntry<Bytes> {
        LogEntry {
            term: Term::new(term),
            index: LogIndex::new(index),
            payload: EntryPayload::Command(Bytes::from_static(command)),
        }
    }

    fn entries(list: &[(u64, u64, &'static [u8])]) -> StorageWrite {
        StorageWrite::Entries(
            list.iter()
                .map(|&(index, term, command)| entry(index, term, command))
                .collect(),
        )
    }

    fn snapshot(index: u64, term: u64) -> RecoveredSnapshot {
        RecoveredSnapshot {
            last_included_index: LogIndex::new(index),
            last_included_term: Term::new(term),
            membership: Membership::default(),
            bytes: Bytes::new(),
        }
    }

    fn persist(logs: &mut StoredLogs, id: u64, writes: &[StorageWrite]) {
        logs.replaces_log(node(id), writes);
        logs.persisted(node(id), 1, &summarize(writes));
    }

    /// Node 1 (a deposed leader) holds 1..=3 of term 1 and 4..=6 of term 2, which never
    /// committed; node 2 holds 1..=3 of term 1 and 4..=5 of term 3, committed.
    fn two_histories() -> StoredLogs {
        let mut logs = StoredLogs::new(0);
        logs.loaded(node(1), 1, None);
        logs.loaded(node(2), 1, None);
        let common = entries(&[(1, 1, b"a"), (2, 1, b"b"), (3, 1, b"c")]);
        persist(&mut logs, 1, std::slice::from_ref(&common));
        persist(
            &mut logs,
            1,
            &[entries(&[(4, 2, b"x"), (5, 2, b"y"), (6, 2, b"z")])],
        );
        persist(&mut logs, 2, &[common]);
        persist(&mut logs, 2, &[entries(&[(4, 3, b"d"), (5, 3, b"e")])]);
        logs
    }

    fn stored(snapshot_at: Option<(u64, u64)>, log: Vec<LogEntry<Bytes>>) -> StoredState {
        StoredState {
            snapshot: snapshot_at.map(|(index, term)| snapshot(index, term)),
            log,
            ..StoredState::default()
        }
    }

    #[test]
    fn correct_histories_of_appends_truncations_and_installs_keep_log_matching() {
        let mut logs = two_histories();
        // Node 1 learns the committed log: its suffix of term 2 is cut and replaced.
        persist(&mut logs, 1, &[entries(&[(4, 3, b"d"), (5, 3, b"e")])]);
        // Node 2 compacts through 4 (a snapshot its log continues), then restarts.
        persist(&mut logs, 2, &[StorageWrite::Snapshot(snapshot(4, 3))]);
        logs.loaded(
            node(2),
            2,
            Some(&stored(Some((4, 3)), vec![entry(5, 3, b"e")])),
        );
        // A third node, a follower of the deposed leader, has its log replaced by an install.
        logs.loaded(node(3), 1, None);
        persist(
            &mut logs,
            3,
            &[entries(&[
                (1, 1, b"a"),
                (2, 1, b"b"),
                (3, 1, b"c"),
                (4, 2, b"x"),
                (5, 2, b"y"),
            ])],
        );
        let writes = [StorageWrite::Snapshot(snapshot(4, 3))];
        assert!(logs.replaces_log(node(3), &writes));
        logs.persisted(node(3), 1, &summarize(&writes));
        persist(&mut logs, 3, &[entries(&[(5, 3, b"e"), (6, 3, b"f")])]);
        logs.loaded(
            node(3),
            2,
            Some(&stored(
                Some((4, 3)),
                vec![entry(5, 3, b"e"), entry(6, 3, b"f")],
            )),
        );
        assert_eq!(logs.violation, None);
        assert_eq!(logs.counts.installs_replacing_a_log, 1);
        assert!(logs.counts.positions_checked > 10);
    }

    #[test]
    fn a_stale_suffix_left_behind_a_new_snapshot_breaks_log_matching() {
        let mut logs = two_histories();
        // Node 1 installs node 2's snapshot through 4 (term 3); a crash part way through
        // removing its old log leaves 5..=6 of term 2 behind the snapshot.
        let writes = [StorageWrite::Snapshot(snapshot(4, 3))];
        assert!(logs.replaces_log(node(1), &writes));
        logs.loaded(
            node(1),
            2,
            Some(&stored(
                Some((4, 3)),
                vec![entry(5, 2, b"y"), entry(6, 2, b"z")],
            )),
        );
        let violation = logs.violation.expect("a spliced log must be reported");
        assert!(
            violation.contains("index 5, term 2 after an entry of term 3"),
            "{violation}"
        );
        assert!(violation.contains("stored it after term 2"), "{violation}");
    }

    #[test]
    fn two_entries_at_one_index_and_term_with_different_payloads_break_log_matching() {
        let mut logs = two_histories();
        persist(&mut logs, 1, &[entries(&[(4, 3, b"d"), (5, 3, b"not e")])]);
        let violation = logs
            .violation
            .expect("a second entry at 5, term 3 must be reported");
        assert!(
            violation.contains("a different entry at index 5, term 3"),
            "{violation}"
        );
    }
}
