//! The checker: what the nodes applied (the journal) against what the clients were told (the
//! history), with the user's state machine as the model.
//!
//! 1. **The journal agrees with itself.** Each node's positions run on by one from where it
//!    started or restored a snapshot, and every node puts the same command at each position:
//!    this is the order the cluster committed, and no command appears at two positions.
//! 2. **Every answer is the model's.** The model (a fresh state machine) applies the
//!    committed commands in that order; an acknowledged write must sit at the position it
//!    was told and have the model's response there, and a read must return what the model
//!    holds at the position it was served from. A refused write must appear nowhere.
//! 3. **Real time is respected.** Once a request has been answered, every request invoked
//!    later lands after it: a later write at a higher position, a later read at the same or
//!    a higher one. With the writes in commit order, that is exactly linearizability: each
//!    write takes effect at its position, each read at the position it saw, and that order
//!    is consistent with every pair of requests that did not overlap in time. It covers
//!    read-your-writes, no lost acknowledged write, no stale read and no phantom value.

use std::collections::BTreeMap;
use std::time::Duration;

use yggr::NodeId;

use super::clients::{Op, Operation, Outcome, Request};
use super::observed::Entry;
use super::workload::Workload;

/// What the checker counted on a history that passed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryCounts {
    /// Commands the cluster committed (the highest position).
    pub committed: u64,
    /// Writes acknowledged with a response.
    pub acknowledged: u64,
    /// Writes refused (and, as checked, never applied).
    pub refused: u64,
    /// Writes whose outcome the client could not learn.
    pub unknown: u64,
    /// Of those, the ones that were applied.
    pub unknown_applied: u64,
    /// Reads served.
    pub reads: u64,
    /// Reads that failed.
    pub reads_failed: u64,
    /// Snapshots restored by a running node (sent by a leader).
    pub snapshots_installed: u64,
    /// Snapshots restored at a node's start, from its own disk.
    pub snapshots_recovered: u64,
}

/// Checks `history` against `journal`; a violation says what and where.
pub(crate) fn check<W: Workload>(
    workload: &W,
    journal: &[Entry],
    history: &[Op<W>],
) -> Result<HistoryCounts, String> {
    let mut counts = HistoryCounts::default();
    let committed = committed_order(journal, &mut counts)?;
    counts.committed = committed.len() as u64;
    let by_id: BTreeMap<u64, &Op<W>> = history
        .iter()
        .map(|operation| (operation.id, operation))
        .collect();
    let mut applied_at: BTreeMap<u64, u64> = BTreeMap::new();
    for (index, operation) in committed.iter().enumerate() {
        if !by_id.contains_key(operation) {
            return Err(format!(
                "position {} holds operation {operation:#x}, which no client sent",
                index + 1
            ));
        }
        applied_at.insert(*operation, index as u64 + 1);
    }
    check_answers(
        workload,
        &committed,
        &by_id,
        &applied_at,
        history,
        &mut counts,
    )?;
    check_real_time(history, &applied_at)?;
    Ok(counts)
}

/// The committed order: the operation at each position from 1, as every node's journal has
/// it.
fn committed_order(journal: &[Entry], counts: &mut HistoryCounts) -> Result<Vec<u64>, String> {
    let mut at: BTreeMap<u64, (u64, NodeId)> = BTreeMap::new();
    let mut lives: BTreeMap<(NodeId, u32), (u64, bool)> = BTreeMap::new();
    for entry in journal {
        match entry {
            Entry::Started { node, life } => {
                lives.insert((*node, *life), (0, true));
            }
            Entry::Restored {
                node,
                life,
                position,
            } => {
                let (current, fresh) = lives.entry((*node, *life)).or_insert((0, true));
                if *fresh {
                    counts.snapshots_recovered += 1;
                } else {
                    counts.snapshots_installed += 1;
                    if *position < *current {
                        return Err(format!(
                            "node {node} (start {life}) restored a snapshot at position {position} over its state at {current}"
                        ));
                    }
                }
                *current = *position;
            }
            Entry::Applied {
                node,
                life,
                position,
                operation,
            } => {
                apply_one(&mut lives, &mut at, *node, *life, *position, *operation)?;
            }
            Entry::Barrier {
                node,
                life,
                position,
                operation,
                ..
            } => {
                apply_one(&mut lives, &mut at, *node, *life, *position, *operation)?;
            }
        }
    }
    let mut order = Vec::with_capacity(at.len());
    for (expected, (position, (operation, _))) in (1u64..).zip(at) {
        if position != expected {
            return Err(format!(
                "no node applied position {expected}, yet one applied {position}"
            ));
        }
        order.push(operation);
    }
    let mut seen = BTreeMap::new();
    for (index, operation) in order.iter().enumerate() {
        if let Some(first) = seen.insert(*operation, index + 1) {
            return Err(format!(
                "operation {operation:#x} was applied twice: at positions {first} and {}",
                index + 1
            ));
        }
    }
    Ok(order)
}

fn apply_one(
    lives: &mut BTreeMap<(NodeId, u32), (u64, bool)>,
    at: &mut BTreeMap<u64, (u64, NodeId)>,
    node: NodeId,
    life: u32,
    position: u64,
    operation: u64,
) -> Result<(), String> {
    let (current, fresh) = lives.entry((node, life)).or_insert((0, true));
    if position != *current + 1 {
        return Err(format!(
            "node {node} (start {life}) applied position {position} right after position {current}"
        ));
    }
    *current = position;
    *fresh = false;
    match at.get(&position) {
        Some((other, by)) if *other != operation => Err(format!(
            "nodes disagree at position {position}: node {by} applied operation {other:#x}, node {node} operation {operation:#x}"
        )),
        Some(_) => Ok(()),
        None => {
            at.insert(position, (operation, node));
            Ok(())
        }
    }
}

/// Replays the committed order on the model and compares every answer.
fn check_answers<W: Workload>(
    workload: &W,
    committed: &[u64],
    by_id: &BTreeMap<u64, &Op<W>>,
    applied_at: &BTreeMap<u64, u64>,
    history: &[Op<W>],
    counts: &mut HistoryCounts,
) -> Result<(), String> {
    // Reads by the position they were served at, so one pass of the model answers them.
    let mut reads_at: BTreeMap<u64, Vec<&Op<W>>> = BTreeMap::new();
    for operation in history {
        match (&operation.request, &operation.outcome) {
            (Request::Read { .. }, Outcome::Read { position, .. }) => {
                counts.reads += 1;
                if *position > committed.len() as u64 {
                    return Err(format!(
                        "read {:#x} was served at position {position}, past everything committed ({})",
                        operation.id,
                        committed.len()
                    ));
                }
                reads_at.entry(*position).or_default().push(operation);
            }
            (Request::Read { .. }, _) => counts.reads_failed += 1,
            (Request::Write(_), Outcome::Written { position, .. }) => {
                counts.acknowledged += 1;
                if applied_at.get(&operation.id) != Some(position) {
                    return Err(format!(
                        "write {:#x} was acknowledged at position {position}, but the cluster committed it at {:?}",
                        operation.id,
                        applied_at.get(&operation.id)
                    ));
                }
            }
            (Request::Write(_), Outcome::Refused(reason)) => {
                counts.refused += 1;
                if let Some(position) = applied_at.get(&operation.id) {
                    return Err(format!(
                        "write {:#x} was refused ({reason}) yet applied at position {position}",
                        operation.id
                    ));
                }
            }
            (Request::Write(_), _) => {
                counts.unknown += 1;
                if applied_at.contains_key(&operation.id) {
                    counts.unknown_applied += 1;
                }
            }
        }
    }
    let mut model = workload.state_machine(NodeId::new(1).expect("1 is a valid node id"));
    check_reads_at(workload, &model, 0, reads_at.get(&0))?;
    for (index, id) in committed.iter().enumerate() {
        let position = index as u64 + 1;
        let operation = by_id[id];
        let Request::Write(command) = &operation.request else {
            return Err(format!("position {position} holds read {id:#x}"));
        };
        let response = yggr::StateMachine::apply(&mut model, command.clone());
        if let Outcome::Written { response: told, .. } = &operation.outcome
            && *told != response
        {
            return Err(format!(
                "write {id:#x} ({command:?}) at position {position} was answered {told:?} by node {}; the model answers {response:?} (a state machine whose apply is not deterministic, or whose snapshot and restore lose something, answers differently on some replica)",
                operation.node
            ));
        }
        check_reads_at(workload, &model, position, reads_at.get(&position))?;
    }
    Ok(())
}

fn check_reads_at<W: Workload>(
    workload: &W,
    model: &W::Machine,
    position: u64,
    reads: Option<&Vec<&Op<W>>>,
) -> Result<(), String> {
    for operation in reads.into_iter().flatten() {
        let (Request::Read { key }, Outcome::Read { value, .. }) =
            (&operation.request, &operation.outcome)
        else {
            continue;
        };
        let expected = workload.read(model, *key);
        if *value != expected {
            return Err(format!(
                "read {:#x} of key {key} at position {position} returned {value:?} from node {}; the model holds {expected:?}",
                operation.id, operation.node
            ));
        }
    }
    Ok(())
}

/// Every request invoked after another was answered lands after it.
fn check_real_time<C, R, Q>(
    history: &[Operation<C, R, Q>],
    applied_at: &BTreeMap<u64, u64>,
) -> Result<(), String> {
    // (time answered, position, id) of every request that fixes a position when answered.
    let mut answered: Vec<(Duration, u64, u64)> = history
        .iter()
        .filter_map(|operation| {
            let position = match operation.outcome {
                Outcome::Written { position, .. } | Outcome::Read { position, .. } => position,
                _ => return None,
            };
            Some((operation.returned?, position, operation.id))
        })
        .collect();
    answered.sort();
    let mut invoked: Vec<&Operation<C, R, Q>> = history.iter().collect();
    invoked.sort_by_key(|operation| (operation.invoked, operation.id));
    let mut highest: Option<(u64, u64)> = None;
    let mut next = 0;
    for operation in invoked {
        // Everything answered strictly before this request was invoked.
        while next < answered.len() && answered[next].0 < operation.invoked {
            let (_, position, id) = answered[next];
            if highest.is_none_or(|(best, _)| position > best) {
                highest = Some((position, id));
            }
            next += 1;
        }
        let Some((floor, because)) = highest else {
            continue;
        };
        match (&operation.request, &operation.outcome) {
            (Request::Read { .. }, Outcome::Read { position, .. }) if *position < floor => {
                return Err(format!(
                    "read {:#x} saw position {position}, older than position {floor}, which request {because:#x} had already been answered with",
                    operation.id
                ));
            }
            (Request::Write(_), _) => {
                if let Some(position) = applied_at.get(&operation.id)
                    && *position <= floor
                {
                    return Err(format!(
                        "write {:#x} was applied at position {position}, though it was sent after request {because:#x} was answered with position {floor}",
                        operation.id
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stack::registers::{RegisterCommand, RegisterValue, RegisterWorkload};

    type Op = Operation<RegisterCommand, RegisterValue, RegisterValue>;

    fn node(id: u64) -> NodeId {
        NodeId::new(id).unwrap()
    }

    fn add(key: u64, delta: u64) -> Request<RegisterCommand> {
        Request::Write(RegisterCommand::Add { key, delta })
    }

    fn op(
        id: u64,
        request: Request<RegisterCommand>,
        times: (u64, u64),
        outcome: Outcome<RegisterValue, RegisterValue>,
    ) -> Op {
        Operation {
            id,
            client: 0,
            node: node(1),
            request,
            invoked: Duration::from_millis(times.0),
            returned: Some(Duration::from_millis(times.1)),
            outcome,
            redirect: None,
        }
    }

    fn written(position: u64, value: u64) -> Outcome<RegisterValue, RegisterValue> {
        Outcome::Written {
            position,
            response: RegisterValue(value),
        }
    }

    fn read(position: u64, value: u64) -> Outcome<RegisterValue, RegisterValue> {
        Outcome::Read {
            position,
            value: Some(RegisterValue(value)),
        }
    }

    /// `node` (start 1) applying `operations` at positions 1, 2, ...
    fn applies(node_id: u64, operations: &[u64]) -> Vec<Entry> {
        let mut entries = vec![Entry::Started {
            node: node(node_id),
            life: 1,
        }];
        for (index, operation) in operations.iter().enumerate() {
            entries.push(Entry::Applied {
                node: node(node_id),
                life: 1,
                position: index as u64 + 1,
                operation: *operation,
            });
        }
        entries
    }

    /// Two adds of 1 and 2 on key 0, one after the other, and a read after both.
    fn sequential() -> (Vec<Entry>, Vec<Op>) {
        let journal = [applies(1, &[10, 11]), applies(2, &[10, 11])].concat();
        let history = vec![
            op(10, add(0, 1), (0, 5), written(1, 1)),
            op(11, add(0, 2), (6, 9), written(2, 3)),
            op(12, Request::Read { key: 0 }, (10, 12), read(2, 3)),
        ];
        (journal, history)
    }

    fn verdict(journal: &[Entry], history: &[Op]) -> Result<HistoryCounts, String> {
        check(&RegisterWorkload::default(), journal, history)
    }

    #[test]
    fn a_history_that_matches_the_model_in_commit_order_passes() {
        let (journal, history) = sequential();
        let counts = verdict(&journal, &history).unwrap();
        assert_eq!(
            (counts.committed, counts.acknowledged, counts.reads),
            (2, 2, 1)
        );
    }

    #[test]
    fn overlapping_requests_may_take_effect_in_either_order() {
        let journal = applies(1, &[11, 10]);
        let history = vec![
            op(10, add(0, 1), (0, 20), written(2, 3)),
            op(11, add(0, 2), (1, 15), written(1, 2)),
            op(12, Request::Read { key: 0 }, (2, 14), read(1, 2)),
        ];
        verdict(&journal, &history).unwrap();
    }

    #[test]
    fn nodes_that_apply_different_commands_at_one_position_fail_the_check() {
        let (mut journal, history) = sequential();
        journal.extend(applies(3, &[11]));
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("disagree at position 1"), "{error}");
    }

    #[test]
    fn a_node_that_skips_a_position_fails_the_check() {
        let (mut journal, history) = sequential();
        journal.push(Entry::Started {
            node: node(3),
            life: 1,
        });
        journal.push(Entry::Applied {
            node: node(3),
            life: 1,
            position: 2,
            operation: 11,
        });
        let error = verdict(&journal, &history).unwrap_err();
        assert!(
            error.contains("applied position 2 right after position 0"),
            "{error}"
        );
    }

    #[test]
    fn a_command_applied_at_two_positions_fails_the_check() {
        let journal = applies(1, &[10, 10]);
        let history = vec![op(10, add(0, 1), (0, 5), written(1, 1))];
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("applied twice"), "{error}");
    }

    #[test]
    fn a_refused_write_that_was_applied_fails_the_check() {
        let (journal, mut history) = sequential();
        history[1].outcome = Outcome::Refused("not the leader".into());
        let error = verdict(&journal, &history).unwrap_err();
        assert!(
            error.contains("refused") && error.contains("yet applied"),
            "{error}"
        );
    }

    #[test]
    fn an_acknowledged_write_no_node_applied_fails_the_check() {
        let (_, history) = sequential();
        let journal = applies(1, &[10]);
        let history = vec![history[0].clone(), history[1].clone()];
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("acknowledged at position 2"), "{error}");
    }

    #[test]
    fn a_response_the_model_does_not_give_fails_the_check() {
        let (journal, mut history) = sequential();
        history[1].outcome = written(2, 4);
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("the model answers"), "{error}");
    }

    #[test]
    fn a_read_of_a_value_the_model_never_held_fails_the_check() {
        let (journal, mut history) = sequential();
        history[2].outcome = read(2, 7);
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("the model holds"), "{error}");
    }

    #[test]
    fn a_read_that_misses_a_write_answered_before_it_began_fails_the_check() {
        let (journal, mut history) = sequential();
        history[2].outcome = read(1, 1);
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("older than position 2"), "{error}");
    }

    #[test]
    fn a_write_sent_after_an_answer_but_applied_before_it_fails_the_check() {
        let journal = applies(1, &[11, 10]);
        let history = vec![
            op(10, add(0, 1), (0, 5), written(2, 3)),
            op(11, add(0, 2), (6, 9), written(1, 2)),
        ];
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("sent after request"), "{error}");
    }

    #[test]
    fn a_command_no_client_sent_fails_the_check() {
        let (mut journal, history) = sequential();
        journal.push(Entry::Applied {
            node: node(1),
            life: 1,
            position: 3,
            operation: 99,
        });
        let error = verdict(&journal, &history).unwrap_err();
        assert!(error.contains("which no client sent"), "{error}");
    }

    #[test]
    fn a_write_of_unknown_outcome_may_be_applied_or_not() {
        let (journal, mut history) = sequential();
        history[1].outcome = Outcome::Unknown("timed out".into());
        history[1].returned = None;
        let counts = verdict(&journal, &history).unwrap();
        assert_eq!((counts.unknown, counts.unknown_applied), (1, 1));
    }
}
