//! An optional, human-readable record of a run: every event, the actions it produced, and
//! every fault the simulator injected. Off by default; the replay example turns it on.

use yggr_core::{Action, Event, Message, NodeId, Rpc};

use crate::harness::Command;
use crate::network::Envelope;

/// Where trace lines go, if anywhere.
#[derive(Debug, Default)]
pub struct Trace {
    enabled: bool,
    lines: Vec<String>,
}

impl Trace {
    /// A trace that records nothing.
    pub fn disabled() -> Trace {
        Trace::default()
    }

    /// A trace that records every line.
    pub fn enabled() -> Trace {
        Trace {
            enabled: true,
            lines: Vec::new(),
        }
    }

    /// The lines recorded so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Takes the recorded lines, leaving the trace empty but still recording.
    pub fn take_lines(&mut self) -> Vec<String> {
        std::mem::take(&mut self.lines)
    }

    pub(crate) fn event(&mut self, step: u64, node: NodeId, event: &Event<Command>) {
        if self.enabled {
            self.lines
                .push(format!("{step:>6} n{node} <- {}", describe_event(event)));
        }
    }

    pub(crate) fn actions(&mut self, step: u64, node: NodeId, actions: &[Action<Command>]) {
        if !self.enabled {
            return;
        }
        for action in actions {
            self.lines
                .push(format!("{step:>6} n{node} -> {}", describe_action(action)));
        }
    }

    pub(crate) fn fault(&mut self, step: u64, what: &str, envelope: &Envelope) {
        if self.enabled {
            self.lines.push(format!(
                "{step:>6} !! {what} {}",
                describe_message(envelope.to, &envelope.message)
            ));
        }
    }

    pub(crate) fn note(&mut self, step: u64, note: String) {
        if self.enabled {
            self.lines.push(format!("{step:>6} !! {note}"));
        }
    }
}

fn describe_event(event: &Event<Command>) -> String {
    match event {
        Event::Incoming(message) => describe_message(message.from, message),
        Event::Tick => "tick".to_string(),
        other => format!("{other:?}"),
    }
}

fn describe_message(peer: NodeId, message: &Message<Command>) -> String {
    let body = match &message.rpc {
        Rpc::AppendEntries(request) => format!(
            "append_entries prev=({}, {}) entries={} commit={}",
            request.prev_log_index,
            request.prev_log_term,
            request.entries.len(),
            request.leader_commit
        ),
        other => format!("{other:?}"),
    };
    format!("[n{} t{} / n{peer}] {body}", message.from, message.term)
}

fn describe_action(action: &Action<Command>) -> String {
    match action {
        Action::Send { to, message } => {
            format!("send to n{to}: {}", describe_message(*to, message))
        }
        Action::PersistLogEntries(entries) => format!(
            "persist entries {}..={}",
            entries.first().map_or(0, |e| e.index.get()),
            entries.last().map_or(0, |e| e.index.get())
        ),
        Action::Apply(entries) => format!(
            "apply {}..={}",
            entries.first().map_or(0, |e| e.index.get()),
            entries.last().map_or(0, |e| e.index.get())
        ),
        other => format!("{other:?}"),
    }
}
