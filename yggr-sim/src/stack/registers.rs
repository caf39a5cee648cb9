//! The simulator's own workload: a handful of integer registers, written, added to and
//! compared-and-set by every client at once, so that requests on one key overlap all the
//! time. Its state machine is a small one written for this, like a user's would be.

use std::collections::BTreeMap;

use yggr::{DecodeError, NodeId, SnapshotError, StateMachine};

use super::workload::{Draw, Workload};

/// What a client asks a register.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterCommand {
    /// Sets the register; answers its previous value.
    Set {
        /// The register.
        key: u64,
        /// The new value.
        value: u64,
    },
    /// Adds to the register (wrapping); answers the new value.
    Add {
        /// The register.
        key: u64,
        /// What to add.
        delta: u64,
    },
    /// Sets the register to `new` if it holds `expected`; answers the value it held.
    CompareAndSet {
        /// The register.
        key: u64,
        /// What it must hold.
        expected: u64,
        /// What it then holds.
        new: u64,
    },
}

/// What a register answers: the value it held before (`Set`, `CompareAndSet`) or after
/// (`Add`, reads). A register never written holds 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegisterValue(pub u64);

/// The registers, by key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Registers {
    values: BTreeMap<u64, u64>,
}

impl Registers {
    /// The value of `key`.
    pub fn get(&self, key: u64) -> u64 {
        self.values.get(&key).copied().unwrap_or(0)
    }
}

const SET: u8 = 1;
const ADD: u8 = 2;
const COMPARE_AND_SET: u8 = 3;

impl StateMachine for Registers {
    type Command = RegisterCommand;
    type Response = RegisterValue;

    fn encode_command(command: &RegisterCommand) -> Vec<u8> {
        let (tag, words) = match *command {
            RegisterCommand::Set { key, value } => (SET, vec![key, value]),
            RegisterCommand::Add { key, delta } => (ADD, vec![key, delta]),
            RegisterCommand::CompareAndSet { key, expected, new } => {
                (COMPARE_AND_SET, vec![key, expected, new])
            }
        };
        let mut bytes = vec![tag];
        for word in words {
            bytes.extend_from_slice(&word.to_le_bytes());
        }
        bytes
    }

    fn decode_command(bytes: &[u8]) -> Result<RegisterCommand, DecodeError> {
        let (tag, rest) = bytes
            .split_first()
            .ok_or_else(|| DecodeError::new("empty"))?;
        let words: Vec<u64> = rest
            .chunks(8)
            .map(|chunk| chunk.try_into().map(u64::from_le_bytes))
            .collect::<Result<_, _>>()
            .map_err(|_| DecodeError::new("a partial word"))?;
        match (*tag, words.as_slice()) {
            (SET, &[key, value]) => Ok(RegisterCommand::Set { key, value }),
            (ADD, &[key, delta]) => Ok(RegisterCommand::Add { key, delta }),
            (COMPARE_AND_SET, &[key, expected, new]) => {
                Ok(RegisterCommand::CompareAndSet { key, expected, new })
            }
            _ => Err(DecodeError::new("not a register command")),
        }
    }

    fn apply(&mut self, command: RegisterCommand) -> RegisterValue {
        match command {
            RegisterCommand::Set { key, value } => {
                RegisterValue(self.values.insert(key, value).unwrap_or(0))
            }
            RegisterCommand::Add { key, delta } => {
                let value = self.values.entry(key).or_insert(0);
                *value = value.wrapping_add(delta);
                RegisterValue(*value)
            }
            RegisterCommand::CompareAndSet { key, expected, new } => {
                let held = self.get(key);
                if held == expected {
                    self.values.insert(key, new);
                }
                RegisterValue(held)
            }
        }
    }

    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut bytes = Vec::with_capacity(16 * self.values.len());
        for (key, value) in &self.values {
            bytes.extend_from_slice(&key.to_le_bytes());
            bytes.extend_from_slice(&value.to_le_bytes());
        }
        Ok(bytes)
    }

    fn restore(&mut self, bytes: Vec<u8>) {
        // Only snapshots of this state machine reach here: pairs of words.
        self.values = bytes
            .chunks_exact(16)
            .map(|pair| {
                let (key, value) = pair.split_at(8);
                let word = |half: &[u8]| u64::from_le_bytes(half.try_into().expect("8 bytes"));
                (word(key), word(value))
            })
            .collect();
    }
}

/// Clients on `keys` registers: sets, adds and compare-and-sets in equal parts, and reads.
#[derive(Clone, Copy, Debug)]
pub struct RegisterWorkload {
    /// How many registers the clients share.
    pub keys: u64,
}

impl Default for RegisterWorkload {
    fn default() -> RegisterWorkload {
        RegisterWorkload { keys: 3 }
    }
}

impl Workload for RegisterWorkload {
    type Command = RegisterCommand;
    type Response = RegisterValue;
    type Read = RegisterValue;
    type Machine = Registers;

    fn state_machine(&self, _node: NodeId) -> Registers {
        Registers::default()
    }

    fn command(&self, draw: &mut Draw) -> RegisterCommand {
        let key = draw.below(self.keys);
        match draw.below(3) {
            0 => RegisterCommand::Set {
                key,
                value: draw.below(100),
            },
            1 => RegisterCommand::Add {
                key,
                delta: 1 + draw.below(9),
            },
            _ => RegisterCommand::CompareAndSet {
                key,
                expected: draw.below(100),
                new: draw.below(100),
            },
        }
    }

    fn key(&self, command: &RegisterCommand) -> u64 {
        match *command {
            RegisterCommand::Set { key, .. }
            | RegisterCommand::Add { key, .. }
            | RegisterCommand::CompareAndSet { key, .. } => key,
        }
    }

    fn keys(&self) -> u64 {
        self.keys
    }

    fn read(&self, state: &Registers, key: u64) -> Option<RegisterValue> {
        Some(RegisterValue(state.get(key)))
    }
}
