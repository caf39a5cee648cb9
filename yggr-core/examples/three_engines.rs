//! A minimal custom host: three engines in one process, each with an in-memory "disk", wired
//! by a queue. It carries out every step's actions in order, as `Action` documents: whatever
//! must be persisted is stored before any message that follows it is sent.
//!
//! ```sh
//! cargo run -p yggr-core --example three_engines
//! ```

use std::collections::{BTreeMap, VecDeque};

use yggr_core::{
    Action, Engine, EntryPayload, Event, LogEntry, Message, NodeId, RandomEnv, Role, Term,
};

/// What one node keeps durably: in a real host, files with fsync.
#[derive(Default)]
struct Disk {
    current_term: Term,
    voted_for: Option<NodeId>,
    log: Vec<LogEntry<String>>,
}

/// One node: its engine, its disk, and what it applied.
struct Host {
    engine: Engine<String>,
    disk: Disk,
    applied: Vec<String>,
}

impl Host {
    /// Feeds `event` to the engine and carries out its actions in order.
    fn step(&mut self, event: Event<String>, network: &mut VecDeque<(NodeId, Message<String>)>) {
        for action in self.engine.step(event) {
            match action {
                Action::PersistHardState {
                    current_term,
                    voted_for,
                } => {
                    self.disk.current_term = current_term;
                    self.disk.voted_for = voted_for;
                }
                Action::PersistLogEntries(entries) => {
                    // Replace the stored log from the first entry's index on.
                    let first = entries[0].index.get();
                    self.disk.log.retain(|entry| entry.index.get() < first);
                    self.disk.log.extend(entries);
                }
                Action::Send { to, message } => network.push_back((to, message)),
                Action::Apply(entries) => {
                    for entry in entries {
                        if let EntryPayload::Command(command) = entry.payload {
                            self.applied.push(command);
                        }
                    }
                }
                // This host takes no snapshots and serves no reads: nothing else to do.
                _ => {}
            }
        }
    }
}

fn main() {
    let ids: Vec<NodeId> = (1..=3).filter_map(NodeId::new).collect();
    let mut hosts: BTreeMap<NodeId, Host> = ids
        .iter()
        .map(|me| {
            let peers = ids.iter().copied().filter(|other| other != me);
            let engine = Engine::new(*me, peers, RandomEnv::seeded(me.get()), 3);
            let host = Host {
                engine,
                disk: Disk::default(),
                applied: Vec::new(),
            };
            (*me, host)
        })
        .collect();
    let mut network = VecDeque::new();
    let deliver_all = |hosts: &mut BTreeMap<NodeId, Host>,
                       network: &mut VecDeque<(NodeId, Message<String>)>| {
        while let Some((to, message)) = network.pop_front() {
            if let Some(host) = hosts.get_mut(&to) {
                host.step(Event::Incoming(message), network);
            }
        }
    };

    // Time passes as ticks until some node's election timer fires and it wins.
    let leader = loop {
        for id in &ids {
            if let Some(host) = hosts.get_mut(id) {
                host.step(Event::Tick, &mut network);
            }
        }
        deliver_all(&mut hosts, &mut network);
        if let Some(host) = hosts
            .values()
            .find(|host| host.engine.role() == Role::Leader)
        {
            break host.engine.id();
        }
    };
    println!(
        "node {leader} leads term {}",
        hosts[&leader].engine.current_term()
    );

    for command in ["set a 1", "set b 2", "del a"] {
        if let Some(host) = hosts.get_mut(&leader) {
            host.step(Event::ClientProposal(command.to_string()), &mut network);
        }
        deliver_all(&mut hosts, &mut network);
    }
    // A heartbeat carries the new commit index to the followers.
    for _ in 0..3 {
        if let Some(host) = hosts.get_mut(&leader) {
            host.step(Event::Tick, &mut network);
        }
        deliver_all(&mut hosts, &mut network);
    }
    for (id, host) in &hosts {
        println!(
            "node {id}: term {} on disk, {} entries stored, applied {:?}",
            host.disk.current_term,
            host.disk.log.len(),
            host.applied
        );
    }
}
