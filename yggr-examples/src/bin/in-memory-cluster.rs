//! Three engines in one process, wired by an in-memory queue: elect a leader, replicate a few
//! commands, and print what each node applied.

use std::collections::{BTreeMap, VecDeque};

use yggr::core::{Action, Engine, EntryPayload, Event, Message, NodeId, RandomEnv, Role};

fn main() {
    let ids: Vec<NodeId> = (1..=3).filter_map(NodeId::new).collect();
    let mut engines: BTreeMap<NodeId, Engine<String>> = ids
        .iter()
        .map(|me| {
            let peers = ids.iter().copied().filter(|other| other != me);
            (*me, Engine::new(*me, peers, RandomEnv::seeded(me.get()), 3))
        })
        .collect();
    let mut in_flight: VecDeque<(NodeId, Message<String>)> = VecDeque::new();
    let mut applied: BTreeMap<NodeId, Vec<String>> = BTreeMap::new();

    let mut run = |node: NodeId,
                   event: Event<String>,
                   engines: &mut BTreeMap<NodeId, Engine<String>>,
                   in_flight: &mut VecDeque<(NodeId, Message<String>)>| {
        let Some(engine) = engines.get_mut(&node) else {
            return;
        };
        for action in engine.step(event) {
            match action {
                Action::Send { to, message } => in_flight.push_back((to, message)),
                Action::Apply(entries) => {
                    for entry in entries {
                        if let EntryPayload::Command(command) = entry.payload {
                            applied.entry(node).or_default().push(command);
                        }
                    }
                }
                _ => {}
            }
        }
    };

    // Tick everyone until some node leads, delivering messages as they appear.
    let leader = loop {
        for node in &ids {
            run(*node, Event::Tick, &mut engines, &mut in_flight);
        }
        while let Some((to, message)) = in_flight.pop_front() {
            run(to, Event::Incoming(message), &mut engines, &mut in_flight);
        }
        if let Some(leader) = engines.values().find(|e| e.role() == Role::Leader) {
            break leader.id();
        }
    };
    println!(
        "node {leader} leads term {}",
        engines[&leader].current_term()
    );

    for command in ["set a 1", "set b 2", "del a"] {
        run(
            leader,
            Event::ClientProposal(command.to_string()),
            &mut engines,
            &mut in_flight,
        );
    }
    // A couple of heartbeat intervals carry the commit index to the followers.
    for _ in 0..6 {
        run(leader, Event::Tick, &mut engines, &mut in_flight);
        while let Some((to, message)) = in_flight.pop_front() {
            run(to, Event::Incoming(message), &mut engines, &mut in_flight);
        }
    }
    for node in &ids {
        println!(
            "node {node} applied {:?}",
            applied.get(node).cloned().unwrap_or_default()
        );
    }
}
