//! A first line of defence before the full simulator: random ticks, proposals, drops,
//! duplicates and reordering across a 3- or 5-node cluster, checking after every step that
//! no term has two leaders, that logs agreeing on an entry's term agree on everything before
//! it, and that no two nodes apply different commands at one index.

use std::collections::BTreeMap;

use crate::common::*;
use proptest::prelude::*;
use yggr_core::{EntryPayload, Event, LogIndex, NodeId, Term};

#[derive(Clone, Debug)]
enum Step {
    Tick(u64),
    Propose(u64),
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (1u64..=5).prop_map(Step::Tick),
        1 => any::<u64>().prop_map(Step::Propose),
        8 => any::<usize>().prop_map(Step::Deliver),
        1 => any::<usize>().prop_map(Step::Drop),
        1 => any::<usize>().prop_map(Step::Duplicate),
    ]
}

fn check_safety(
    net: &Net,
    leaders: &mut BTreeMap<Term, NodeId>,
    applied_at: &mut BTreeMap<LogIndex, Option<u64>>,
    applied_seen: &mut BTreeMap<NodeId, usize>,
) -> Result<(), TestCaseError> {
    for (leader, leader_term) in net.leaders() {
        let previous = *leaders.entry(leader_term).or_insert(leader);
        prop_assert_eq!(
            previous,
            leader,
            "Election Safety: two leaders in {}",
            leader_term
        );
    }
    let engines: Vec<_> = net.engines.values().collect();
    for (a, first) in engines.iter().enumerate() {
        for second in &engines[a + 1..] {
            let last = first.last_log_index().min(second.last_log_index());
            let mut index = last;
            // Find the highest index where both agree on the term; all before must agree too.
            while index > LogIndex::ZERO {
                let (x, y) = (first.entry(index), second.entry(index));
                if let (Some(x), Some(y)) = (x, y)
                    && x.term == y.term
                {
                    break;
                }
                index = index.prev();
            }
            let mut at = index;
            while at > LogIndex::ZERO {
                if let (Some(x), Some(y)) = (first.entry(at), second.entry(at)) {
                    prop_assert_eq!(x, y, "Log Matching at {}", at);
                }
                at = at.prev();
            }
        }
    }
    for (node, entries) in &net.applied {
        let seen = applied_seen.entry(*node).or_insert(0);
        for entry in &entries[*seen..] {
            let command = match entry.payload {
                EntryPayload::Command(command) => Some(command),
                _ => None,
            };
            let first = *applied_at.entry(entry.index).or_insert(command);
            prop_assert_eq!(first, command, "State Machine Safety at {}", entry.index);
        }
        *seen = entries.len();
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn chaos_schedules_keep_election_log_and_state_machine_safety(
        size in prop_oneof![Just(3u64), Just(5u64)],
        steps in proptest::collection::vec(step(), 1..1500),
    ) {
        let mut net = Net::new(size);
        let mut leaders = BTreeMap::new();
        let mut applied_at = BTreeMap::new();
        let mut applied_seen = BTreeMap::new();
        for step in steps {
            match step {
                Step::Tick(node) => {
                    if node <= size {
                        net.step(node, Event::Tick);
                    }
                }
                Step::Propose(command) => {
                    if let Some((leader, _)) = net.leaders().into_iter().max_by_key(|(_, t)| *t) {
                        net.step(leader.get(), Event::ClientProposal(command));
                    }
                }
                Step::Deliver(pick) => {
                    if !net.in_flight.is_empty() {
                        let (to, message) = net.in_flight.remove(pick % net.in_flight.len()).unwrap();
                        net.step(to.get(), Event::Incoming(message));
                    }
                }
                Step::Drop(pick) => {
                    if !net.in_flight.is_empty() {
                        net.in_flight.remove(pick % net.in_flight.len());
                    }
                }
                Step::Duplicate(pick) => {
                    if !net.in_flight.is_empty() {
                        let copy = net.in_flight[pick % net.in_flight.len()].clone();
                        net.in_flight.push_back(copy);
                    }
                }
            }
            check_safety(&net, &mut leaders, &mut applied_at, &mut applied_seen)?;
        }
        if std::env::var_os("YGGR_CHAOS_STATS").is_some() {
            eprintln!("leaders over terms: {}, indexes applied: {}", leaders.len(), applied_at.len());
        }
    }
}
