//! The application's replicated state: what the user writes, and its two small error types.

/// The state a cluster replicates. Every node applies the same commands in the same order;
/// `apply` must therefore be deterministic: the same command on the same state gives the same
/// new state and the same response on every node.
///
/// Commands travel as bytes: `encode_command` turns one into the bytes stored in the log and
/// sent to peers, `decode_command` turns them back on every node before `apply`. The two must
/// round-trip.
///
/// `snapshot` and `restore` are optional. Without them the log is never compacted and a node
/// that falls behind catches up from the log alone.
pub trait StateMachine: Send + 'static {
    /// What clients ask the state machine to do.
    type Command: Clone + Send + 'static;
    /// What applying a command returns to the client that proposed it.
    type Response: Send + 'static;

    /// The bytes stored in the log for `command`.
    fn encode_command(command: &Self::Command) -> Vec<u8>;

    /// The command `bytes` encode.
    ///
    /// # Errors
    /// [`DecodeError`] when the bytes are not a command this state machine wrote. A committed
    /// entry that does not decode is fatal for the node: it cannot apply it and go on.
    fn decode_command(bytes: &[u8]) -> Result<Self::Command, DecodeError>;

    /// Applies one committed command and returns the client's response.
    fn apply(&mut self, command: Self::Command) -> Self::Response;

    /// The whole state as bytes, for compaction and for catching up lagging nodes. Runs on the
    /// apply task; the node keeps serving while it runs.
    ///
    /// # Errors
    /// [`SnapshotError`] when no snapshot can be taken now; the node logs it and tries again
    /// at the next hint. The default says snapshots are not supported.
    fn snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        Err(SnapshotError::new(
            "this state machine does not implement snapshots",
        ))
    }

    /// Replaces the whole state with one `snapshot` produced (on this node or another).
    /// The default does nothing, which is only right for a state machine that never
    /// snapshots.
    fn restore(&mut self, bytes: Vec<u8>) {
        let _ = bytes;
    }
}

/// Bytes that are not a valid command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("command does not decode: {reason}")]
pub struct DecodeError {
    reason: String,
}

impl DecodeError {
    /// A decode error saying why.
    pub fn new(reason: impl Into<String>) -> DecodeError {
        DecodeError {
            reason: reason.into(),
        }
    }

    /// Why the bytes did not decode.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// A snapshot that could not be taken now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("snapshot failed: {reason}")]
pub struct SnapshotError {
    reason: String,
}

impl SnapshotError {
    /// A snapshot error saying why.
    pub fn new(reason: impl Into<String>) -> SnapshotError {
        SnapshotError {
            reason: reason.into(),
        }
    }

    /// Why the snapshot failed.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}
