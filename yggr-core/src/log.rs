//! The in-memory replicated log above the snapshot floor.

use std::collections::VecDeque;

use crate::entry::LogEntry;
use crate::types::{LogIndex, Term};

/// The live part of the log: entries after the last snapshot.
///
/// Invariants:
/// - `entries[i].index == snapshot_index + 1 + i` (contiguous, no gaps);
/// - terms never decrease along the log, and none is below `snapshot_term`.
///
/// Appends and prefix compaction are amortised O(1) per entry (a `VecDeque`); lookups by
/// index are O(1); nothing here clones the log as a whole.
#[derive(Clone, Debug)]
pub(crate) struct RaftLog<C> {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: VecDeque<LogEntry<C>>,
}

impl<C> RaftLog<C> {
    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.snapshot_index.plus(self.entries.len() as u64)
    }
}

impl<C: Clone> RaftLog<C> {
    pub(crate) fn new() -> RaftLog<C> {
        RaftLog {
            snapshot_index: LogIndex::ZERO,
            snapshot_term: Term::ZERO,
            entries: VecDeque::new(),
        }
    }

    /// A log that starts after a snapshot, holding `entries`. The caller has validated that
    /// they are contiguous from `snapshot_index + 1` with non-decreasing terms.
    pub(crate) fn restored(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        entries: Vec<LogEntry<C>>,
    ) -> RaftLog<C> {
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries: entries.into(),
        }
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries
            .back()
            .map_or(self.snapshot_term, |entry| entry.term)
    }

    /// Entries above the snapshot floor.
    pub(crate) fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    fn offset(&self, index: LogIndex) -> Option<usize> {
        if index <= self.snapshot_index || index > self.last_index() {
            return None;
        }
        usize::try_from(index.distance_from(self.snapshot_index) - 1).ok()
    }

    /// The term of the entry at `index`; the snapshot's term at the floor itself. `None` for an
    /// index below the floor (compacted) or past the end.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.offset(index).map(|offset| self.entries[offset].term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&LogEntry<C>> {
        self.offset(index).map(|offset| &self.entries[offset])
    }

    /// Up to `max` entries starting at `from` (which must be above the floor), cloned for
    /// sending or applying. Clones only what is returned.
    pub(crate) fn entries_from(&self, from: LogIndex, max: usize) -> Vec<LogEntry<C>> {
        match self.offset(from) {
            Some(start) => self.entries.range(start..).take(max).cloned().collect(),
            None => Vec::new(),
        }
    }

    /// Entries in `from..=to`, cloned.
    pub(crate) fn entries_between(&self, from: LogIndex, to: LogIndex) -> Vec<LogEntry<C>> {
        let count = to.distance_from(from.prev());
        self.entries_from(from, usize::try_from(count).unwrap_or(usize::MAX))
    }

    /// Appends one entry at the end.
    ///
    /// # Panics
    /// If `entry.index` is not `last_index + 1` or its term is below the last term: both would
    /// break the log's contiguity invariant, and every caller constructs or validates entries
    /// so that this cannot happen.
    pub(crate) fn append(&mut self, entry: LogEntry<C>) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "log invariant: appended entries are contiguous"
        );
        assert!(
            entry.term >= self.last_term(),
            "log invariant: terms never decrease along the log"
        );
        self.entries.push_back(entry);
    }

    /// Removes every entry at or after `from`, which must be above the floor.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.snapshot_index,
            "log invariant: entries covered by a snapshot are committed and never truncated"
        );
        if let Some(offset) = self.offset(from) {
            self.entries.truncate(offset);
        }
    }

    /// Moves the floor up to `index` with term `term`, dropping the entries it covers. When
    /// `index` lies past the end, the whole live log goes.
    pub(crate) fn compact_to(&mut self, index: LogIndex, term: Term) {
        if index <= self.snapshot_index {
            return;
        }
        if index >= self.last_index() {
            self.entries.clear();
        } else {
            let drop_count = index.distance_from(self.snapshot_index);
            self.entries
                .drain(..usize::try_from(drop_count).unwrap_or(usize::MAX));
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Discards the whole live log and sets the floor to `index` / `term` (installing a
    /// snapshot that our log does not continue).
    pub(crate) fn reset_to(&mut self, index: LogIndex, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// The first index holding `term`, scanning back from `index` (inclusive) while the term
    /// stays the same. Used for the follower's conflict hint; costs one step per entry of
    /// that term, paid only on a rejection.
    pub(crate) fn first_index_of_term_at(&self, index: LogIndex) -> LogIndex {
        let Some(term) = self.term_at(index) else {
            return index;
        };
        let mut first = index;
        while first.prev() > self.snapshot_index && self.term_at(first.prev()) == Some(term) {
            first = first.prev();
        }
        first
    }

    /// The last index whose entry has `term`, if the live log holds any. Binary search: terms
    /// are non-decreasing along the log.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<LogIndex> {
        let after = self.entries.partition_point(|entry| entry.term <= term);
        if after == 0 {
            return (self.snapshot_term == term && self.snapshot_index > LogIndex::ZERO)
                .then_some(self.snapshot_index);
        }
        let candidate = &self.entries[after - 1];
        (candidate.term == term).then_some(candidate.index)
    }

    /// Iterates the live entries in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &LogEntry<C>> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryPayload;

    fn entry(index: u64, term: u64) -> LogEntry<u64> {
        LogEntry {
            term: Term::new(term),
            index: LogIndex::new(index),
            payload: EntryPayload::Command(index),
        }
    }

    fn log_with_terms(terms: &[u64]) -> RaftLog<u64> {
        let mut log = RaftLog::new();
        for (offset, term) in terms.iter().enumerate() {
            log.append(entry(offset as u64 + 1, *term));
        }
        log
    }

    #[test]
    fn empty_log_has_index_and_term_zero() {
        let log: RaftLog<u64> = RaftLog::new();
        assert_eq!(log.last_index(), LogIndex::ZERO);
        assert_eq!(log.last_term(), Term::ZERO);
        assert_eq!(log.term_at(LogIndex::ZERO), Some(Term::ZERO));
        assert_eq!(log.term_at(LogIndex::new(1)), None);
    }

    #[test]
    fn truncation_removes_the_suffix_only() {
        let mut log = log_with_terms(&[1, 1, 2, 3]);
        log.truncate_from(LogIndex::new(3));
        assert_eq!(log.last_index(), LogIndex::new(2));
        assert_eq!(log.last_term(), Term::new(1));
    }

    #[test]
    fn compaction_keeps_lookups_by_index_working() {
        let mut log = log_with_terms(&[1, 1, 2, 3, 3]);
        log.compact_to(LogIndex::new(3), Term::new(2));
        assert_eq!(log.len(), 2);
        assert_eq!(log.term_at(LogIndex::new(3)), Some(Term::new(2)));
        assert_eq!(log.term_at(LogIndex::new(2)), None, "compacted");
        assert_eq!(
            log.entry(LogIndex::new(4)).map(|e| e.term),
            Some(Term::new(3))
        );
        assert_eq!(log.entries_from(LogIndex::new(4), 10).len(), 2);
        log.compact_to(LogIndex::new(9), Term::new(4));
        assert_eq!(log.last_index(), LogIndex::new(9));
        assert_eq!(log.len(), 0);
    }

    #[test]
    fn conflict_hint_finds_the_first_index_of_a_term() {
        let log = log_with_terms(&[1, 2, 2, 2, 3]);
        assert_eq!(
            log.first_index_of_term_at(LogIndex::new(4)),
            LogIndex::new(2)
        );
        assert_eq!(
            log.first_index_of_term_at(LogIndex::new(5)),
            LogIndex::new(5)
        );
        assert_eq!(log.last_index_of_term(Term::new(2)), Some(LogIndex::new(4)));
        assert_eq!(log.last_index_of_term(Term::new(4)), None);
        assert_eq!(log.last_index_of_term(Term::new(0)), None);
    }

    /// When every live entry is of a later term, the snapshot's last entry may be the answer.
    #[test]
    fn the_last_index_of_a_term_can_be_the_snapshots_last_entry() {
        let mut log = log_with_terms(&[1, 2, 2, 3, 3]);
        log.compact_to(LogIndex::new(3), Term::new(2));
        assert_eq!(log.last_index_of_term(Term::new(2)), Some(LogIndex::new(3)));
        assert_eq!(log.last_index_of_term(Term::new(1)), None);
        assert_eq!(log.last_index_of_term(Term::new(3)), Some(LogIndex::new(5)));
        // An empty log's floor (index 0, term 0) is no entry at all.
        let empty = log_with_terms(&[]);
        assert_eq!(empty.last_index_of_term(Term::new(0)), None);
    }

    #[test]
    #[should_panic(expected = "contiguous")]
    fn appending_with_a_gap_breaks_the_invariant() {
        let mut log = log_with_terms(&[1]);
        log.append(entry(3, 1));
    }
}
