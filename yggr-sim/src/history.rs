//! What clients were told: the write-history oracle.
//!
//! Every proposal and every read is followed from the moment a client sends it until it is
//! answered, the way a runtime answers its callers: a write is acknowledged when the node that
//! accepted it applies it at the index it was given, refused when that node would not take it,
//! and left indeterminate when the node crashed or lost its leadership first (the entry may
//! still commit). The liveness phase then demands that nothing is left unanswered, and that
//! every acknowledged write is in the history every node applies.

use std::collections::BTreeMap;

use yggr_core::{Action, EntryPayload, LogEntry, LogIndex, NodeId, Term};

use crate::harness::Command;

/// Where one proposal stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalOutcome {
    /// Appended by `node` at `index` in `term`; no answer yet.
    Pending {
        /// The node that accepted it.
        node: NodeId,
        /// The index it was appended at.
        index: LogIndex,
        /// The leader's term.
        term: Term,
    },
    /// Applied at `index` by the node that accepted it: the client got `Ok`.
    Acknowledged {
        /// Where it committed.
        index: LogIndex,
    },
    /// Definitely not committed: refused outright, or its index committed with another entry.
    Refused,
    /// The client got an error that does not say whether the write happened (the node crashed
    /// or stepped down first).
    Indeterminate,
}

/// A read a client is waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingRead {
    /// The highest index committed anywhere when the read was sent: a linearizable answer
    /// must reflect at least this.
    pub required: LogIndex,
    /// The step at which it was sent.
    pub sent_at_step: u64,
}

/// Every client request of a run and its outcome.
#[derive(Clone, Debug, Default)]
pub struct ClientHistory {
    proposals: BTreeMap<Command, ProposalOutcome>,
    /// Pending proposals by the node that accepted them, by index.
    pending: BTreeMap<NodeId, BTreeMap<LogIndex, (Term, Command)>>,
    reads: BTreeMap<(NodeId, u64), PendingRead>,
}

impl ClientHistory {
    /// A proposal of `command` to `node` was answered by `actions`; `appended` is the entry it
    /// became, if the node took it.
    pub fn proposed(
        &mut self,
        node: NodeId,
        command: Command,
        actions: &[Action<Command>],
        appended: Option<(LogIndex, Term)>,
    ) {
        let refused = actions.iter().any(|action| {
            matches!(
                action,
                Action::Redirect { .. } | Action::TransferInProgress { .. }
            )
        });
        let outcome = match appended {
            Some((index, term)) if !refused => {
                self.pending
                    .entry(node)
                    .or_default()
                    .insert(index, (term, command));
                ProposalOutcome::Pending { node, index, term }
            }
            _ => ProposalOutcome::Refused,
        };
        self.proposals.insert(command, outcome);
    }

    /// `node` applied `entry`: a proposal it accepted at that index is answered.
    pub fn applied(&mut self, node: NodeId, entry: &LogEntry<Command>) {
        let Some(waiting) = self.pending.get_mut(&node) else {
            return;
        };
        let Some((term, command)) = waiting.remove(&entry.index) else {
            return;
        };
        let same = entry.term == term && entry.payload == EntryPayload::Command(command);
        let outcome = if same {
            ProposalOutcome::Acknowledged { index: entry.index }
        } else {
            ProposalOutcome::Refused
        };
        self.proposals.insert(command, outcome);
    }

    /// `node` crashed, stepped down or jumped past its pending indexes by installing a
    /// snapshot: its waiting clients get an error that leaves the outcome open.
    pub fn abandon(&mut self, node: NodeId) {
        if let Some(waiting) = self.pending.remove(&node) {
            for (_, (_, command)) in waiting {
                self.proposals
                    .insert(command, ProposalOutcome::Indeterminate);
            }
        }
    }

    /// A read was sent to `node`.
    pub fn read_sent(&mut self, node: NodeId, id: u64, read: PendingRead) {
        self.reads.insert((node, id), read);
    }

    /// The read `id` at `node` was answered; returns what it waited for, if it was known.
    pub fn read_answered(&mut self, node: NodeId, id: u64) -> Option<PendingRead> {
        self.reads.remove(&(node, id))
    }

    /// `node` crashed: its readers get an error.
    pub fn abandon_reads(&mut self, node: NodeId) {
        self.reads.retain(|(reader, _), _| *reader != node);
    }

    /// Proposals still waiting for an answer, as `(command, outcome)`.
    pub fn pending_proposals(&self) -> impl Iterator<Item = (Command, ProposalOutcome)> + '_ {
        self.pending.values().flat_map(|waiting| {
            waiting.values().map(|(_, command)| {
                (
                    *command,
                    self.proposals
                        .get(command)
                        .copied()
                        .unwrap_or(ProposalOutcome::Indeterminate),
                )
            })
        })
    }

    /// Reads still waiting for an answer.
    pub fn pending_reads(&self) -> impl Iterator<Item = (&(NodeId, u64), &PendingRead)> + '_ {
        self.reads.iter()
    }

    /// Every acknowledged write, as `(command, index)`.
    pub fn acknowledged(&self) -> impl Iterator<Item = (Command, LogIndex)> + '_ {
        self.proposals
            .iter()
            .filter_map(|(command, outcome)| match outcome {
                ProposalOutcome::Acknowledged { index } => Some((*command, *index)),
                _ => None,
            })
    }

    /// The outcome of `command`, if it was proposed.
    pub fn outcome(&self, command: Command) -> Option<ProposalOutcome> {
        self.proposals.get(&command).copied()
    }

    /// Counts of proposals by outcome: `(acknowledged, refused, indeterminate, pending)`.
    pub fn tally(&self) -> (u64, u64, u64, u64) {
        let mut counts = (0, 0, 0, 0);
        for outcome in self.proposals.values() {
            match outcome {
                ProposalOutcome::Acknowledged { .. } => counts.0 += 1,
                ProposalOutcome::Refused => counts.1 += 1,
                ProposalOutcome::Indeterminate => counts.2 += 1,
                ProposalOutcome::Pending { .. } => counts.3 += 1,
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    fn entry(index: u64, term: u64, command: Command) -> LogEntry<Command> {
        LogEntry {
            index: LogIndex::new(index),
            term: Term::new(term),
            payload: EntryPayload::Command(command),
        }
    }

    #[test]
    fn a_write_is_acknowledged_when_its_node_applies_it_where_it_was_appended() {
        let mut history = ClientHistory::default();
        history.proposed(id(1), 7, &[], Some((LogIndex::new(3), Term::new(2))));
        history.applied(id(2), &entry(3, 2, 7));
        assert!(matches!(
            history.outcome(7),
            Some(ProposalOutcome::Pending { .. })
        ));
        history.applied(id(1), &entry(3, 2, 7));
        assert_eq!(
            history.outcome(7),
            Some(ProposalOutcome::Acknowledged {
                index: LogIndex::new(3)
            })
        );
        assert_eq!(history.pending_proposals().count(), 0);
    }

    #[test]
    fn another_entry_committed_at_its_index_refuses_it() {
        let mut history = ClientHistory::default();
        history.proposed(id(1), 7, &[], Some((LogIndex::new(3), Term::new(2))));
        history.applied(id(1), &entry(3, 3, 9));
        assert_eq!(history.outcome(7), Some(ProposalOutcome::Refused));
    }

    #[test]
    fn redirect_refuses_and_a_crash_leaves_it_open() {
        let mut history = ClientHistory::default();
        history.proposed(id(2), 1, &[Action::Redirect { leader_hint: None }], None);
        assert_eq!(history.outcome(1), Some(ProposalOutcome::Refused));
        history.proposed(id(1), 2, &[], Some((LogIndex::new(4), Term::new(1))));
        history.abandon(id(1));
        assert_eq!(history.outcome(2), Some(ProposalOutcome::Indeterminate));
        assert_eq!(history.tally(), (0, 1, 1, 0));
    }
}
