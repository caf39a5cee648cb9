//! What each Redis command does: a write goes through the log (`Node::write`), a read is
//! linearizable (`Node::read_linearizable`), and the `RAFT.*` commands drive the cluster.
//! Errors become the replies a Redis cluster client understands: `MOVED` to the leader,
//! `TRYAGAIN` while there is none, and a plain error on a node that knows it was removed
//! (no leader will ever come for it).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use yggr::{
    MembershipError, Node, NodeId, ProposeError, ReadError, Role, StatusError,
    TransferLeadershipError,
};

use super::membership::{MembershipRecord, Standing};
use super::resp::Reply;
use super::status;
use super::store::{AddressBook, KvCommand, KvResponse, KvStore, Member, parse_integer};

/// The most value bytes one `MGET` reply may carry.
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// The most bytes of an unknown command's name its error echoes (Redis's limit too): a
/// client sending a 60 KB name gets a short error, not its 60 KB back.
pub const UNKNOWN_NAME_ECHO_BYTES: usize = 128;

/// Runs commands against one node.
#[derive(Clone)]
pub struct Service {
    node: Node<KvStore>,
    book: AddressBook,
    /// Addresses this node was told about at start (its `--peer` flags): where to redirect
    /// before the replicated book has them.
    configured: Arc<BTreeMap<NodeId, Member>>,
    membership: MembershipRecord,
}

impl Service {
    /// Commands run on `node`; redirects are looked up in `book`, then in `configured`.
    pub fn new(
        node: Node<KvStore>,
        book: AddressBook,
        configured: BTreeMap<NodeId, Member>,
    ) -> Service {
        Service {
            node,
            book,
            configured: Arc::new(configured),
            membership: MembershipRecord::default(),
        }
    }

    /// The node behind this service.
    pub fn node(&self) -> &Node<KvStore> {
        &self.node
    }

    /// What this service has seen of its node's membership.
    pub fn membership_record(&self) -> &MembershipRecord {
        &self.membership
    }

    /// Looks at the node's membership now and records it. Call it periodically (the `kv`
    /// binary does, every tick): a node learns it was removed only from what it saw before.
    ///
    /// # Errors
    /// The node has stopped.
    pub async fn observe_membership(&self) -> Result<Standing, StatusError> {
        let metrics = self.node.node_metrics().await?;
        Ok(self
            .membership
            .observe(&metrics.status, metrics.last_log_index))
    }

    /// Runs one command (its name and arguments) and returns the reply.
    pub async fn execute(&self, arguments: &[Bytes]) -> Reply {
        let Some((given, arguments)) = arguments.split_first() else {
            return Reply::error("empty command");
        };
        let name = String::from_utf8_lossy(given).to_ascii_uppercase();
        let Some(arity) = arity(&name) else {
            return unknown_command(given);
        };
        if !arity.accepts(arguments.len()) {
            return Reply::error(format!(
                "wrong number of arguments for '{}' command",
                name.to_ascii_lowercase()
            ));
        }
        match name.as_str() {
            "PING" => match arguments.first() {
                Some(message) => Reply::Bulk(message.clone()),
                None => Reply::Simple("PONG"),
            },
            "ECHO" => Reply::Bulk(arguments[0].clone()),
            "QUIT" => Reply::Simple("OK"),
            "COMMAND" => Reply::Array(Vec::new()),
            "CLIENT" => client(arguments),
            "CONFIG" => config_get(arguments),
            "SELECT" => match arguments[0].as_ref() {
                b"0" => Reply::Simple("OK"),
                _ => Reply::error("DB index is out of range"),
            },
            "SET" if arguments.len() > 2 => {
                Reply::error("SET options (EX, PX, NX, XX, KEEPTTL, GET) are not supported")
            }
            "SET" => {
                self.write(KvCommand::Set {
                    key: arguments[0].clone(),
                    value: arguments[1].clone(),
                })
                .await
            }
            "DEL" => {
                self.write(KvCommand::Delete {
                    keys: arguments.to_vec(),
                })
                .await
            }
            "INCR" => self.increment(&arguments[0], 1).await,
            "DECR" => self.increment(&arguments[0], -1).await,
            "DECRBY" => match parse_integer(&arguments[1]).and_then(i64::checked_neg) {
                Some(by) => self.increment(&arguments[0], by).await,
                None => not_an_integer(),
            },
            "INCRBY" => match parse_integer(&arguments[1]) {
                Some(by) => self.increment(&arguments[0], by).await,
                None => not_an_integer(),
            },
            "CAS" => {
                self.write(KvCommand::CompareAndSet {
                    key: arguments[0].clone(),
                    expected: arguments[1].clone(),
                    new: arguments[2].clone(),
                })
                .await
            }
            "GET" => {
                let key = arguments[0].clone();
                self.read(move |store| store.get(&key).map_or(Reply::Nil, Reply::Bulk))
                    .await
            }
            "MGET" => {
                let keys = arguments.to_vec();
                self.read(move |store| {
                    // The reply is built whole before it is written: bound it, or a short
                    // request naming one large key many times could ask for gigabytes.
                    let mut bytes = 0usize;
                    let mut values = Vec::with_capacity(keys.len());
                    for key in &keys {
                        let value = store.get(key);
                        bytes += value.as_ref().map_or(0, Bytes::len);
                        if bytes > MAX_REPLY_BYTES {
                            return Reply::error(format!(
                                "the reply would exceed {MAX_REPLY_BYTES} bytes; ask for fewer keys"
                            ));
                        }
                        values.push(value.map_or(Reply::Nil, Reply::Bulk));
                    }
                    Reply::Array(values)
                })
                .await
            }
            "EXISTS" => {
                let keys = arguments.to_vec();
                self.read(move |store| {
                    Reply::Integer(keys.iter().filter(|key| store.contains(key)).count() as i64)
                })
                .await
            }
            "DBSIZE" => self.read(|store| Reply::Integer(store.len() as i64)).await,
            "STRLEN" => {
                let key = arguments[0].clone();
                self.read(move |store| {
                    Reply::Integer(store.get(&key).map_or(0, |value| value.len() as i64))
                })
                .await
            }
            "INFO" => status::info(self, arguments.first()).await,
            "RAFT.STATUS" => status::raft_status(self).await,
            "RAFT.ADDLEARNER" => self.add_learner(arguments).await,
            "RAFT.PROMOTE" => match node_id(&arguments[0]) {
                Ok(id) => self.membership(self.node.admin().promote_learner(id).await),
                Err(reply) => reply,
            },
            "RAFT.REMOVE" => self.remove(&arguments[0]).await,
            "RAFT.TRANSFER" => match node_id(&arguments[0]) {
                Ok(id) if id == self.node.id() && self.node.current_leader() == Some(id) => {
                    Reply::Simple("OK")
                }
                Ok(id) => match self.node.transfer_leadership_to(id).await {
                    Ok(()) => Reply::Simple("OK"),
                    Err(error) => self.transfer_error(error),
                },
                Err(reply) => reply,
            },
            "RAFT.SNAPSHOT" => match self.node.admin().trigger_snapshot().await {
                Ok(()) => Reply::Simple("OK"),
                Err(error) => Reply::error(format!("snapshot failed: {error}")),
            },
            _ => unreachable!("every command with an arity is handled above"),
        }
    }

    async fn write(&self, command: KvCommand) -> Reply {
        match self.node.write(command).await {
            Ok(KvResponse::Ok) => Reply::Simple("OK"),
            Ok(KvResponse::Integer(value)) => Reply::Integer(value),
            Ok(KvResponse::NotAnInteger) => not_an_integer(),
            Ok(KvResponse::Overflow) => Reply::error("increment or decrement would overflow"),
            Err(error) => self.propose_error(error),
        }
    }

    async fn increment(&self, key: &Bytes, by: i64) -> Reply {
        self.write(KvCommand::IncrementBy {
            key: key.clone(),
            by,
        })
        .await
    }

    async fn read<F>(&self, read: F) -> Reply
    where
        F: FnOnce(&KvStore) -> Reply + Send + 'static,
    {
        match self.node.read_linearizable(read).await {
            Ok(reply) => reply,
            Err(ReadError::NotLeader { leader_hint }) => self.moved(leader_hint),
            Err(ReadError::NoLeader) => self.no_leader(),
            Err(ReadError::NotReady) => try_again("the leader is not ready"),
            Err(ReadError::SteppedDown) => try_again("the leader stepped down"),
            Err(ReadError::Busy) => try_again("busy: too many reads waiting"),
            Err(ReadError::Shutdown) => shutting_down(),
            Err(error) => Reply::error(error),
        }
    }

    /// `RAFT.ADDLEARNER id raft_addr client_addr`: records the addresses through the log (so
    /// every node can reach and redirect to it), then adds the node as a learner.
    async fn add_learner(&self, arguments: &[Bytes]) -> Reply {
        let id = match node_id(&arguments[0]) {
            Ok(id) => id,
            Err(reply) => return reply,
        };
        let (Some(raft), Some(client)) = (address(&arguments[1]), address(&arguments[2])) else {
            return Reply::error("addresses must be ip:port");
        };
        // Refuse before anything goes through the log: recording addresses for a node that
        // is already a member would repoint every node at them, even though the add fails.
        match self.node.status().await {
            Ok(status) if status.membership.contains(id) => {
                return Reply::error(format!("node {id} is already a member"));
            }
            Ok(_) => {}
            Err(error) => return Reply::error(error),
        }
        let recorded = self
            .write(KvCommand::SetMember {
                id,
                member: Member { raft, client },
            })
            .await;
        if recorded != Reply::Simple("OK") {
            return recorded;
        }
        self.membership(self.node.admin().add_learner(id).await)
    }

    async fn remove(&self, argument: &Bytes) -> Reply {
        let id = match node_id(argument) {
            Ok(id) => id,
            Err(reply) => return reply,
        };
        let reply = self.membership(self.node.admin().remove_peer(id).await);
        if reply == Reply::Simple("OK") {
            // Best effort: a leader that removed itself no longer leads, and a stale entry in
            // the book only names an address nobody is sent to.
            let _ = self.node.write(KvCommand::ForgetMember { id }).await;
        }
        reply
    }

    fn membership(&self, outcome: Result<(), MembershipError>) -> Reply {
        match outcome {
            Ok(()) => Reply::Simple("OK"),
            Err(MembershipError::NotLeader { leader_hint }) => self.moved(leader_hint),
            Err(MembershipError::NoLeader) => self.no_leader(),
            Err(MembershipError::Busy) => try_again("busy"),
            Err(MembershipError::ChangeInProgress) => {
                try_again("another membership change is in progress")
            }
            Err(MembershipError::Shutdown) => shutting_down(),
            Err(MembershipError::OutcomeUnknown) => outcome_unknown(),
            Err(error) => Reply::error(error),
        }
    }

    fn transfer_error(&self, error: TransferLeadershipError) -> Reply {
        match error {
            TransferLeadershipError::NotLeader { leader_hint } => self.moved(leader_hint),
            TransferLeadershipError::NoLeader => self.no_leader(),
            TransferLeadershipError::Shutdown => shutting_down(),
            error => Reply::error(error),
        }
    }

    fn propose_error(&self, error: ProposeError) -> Reply {
        match error {
            ProposeError::NotLeader { leader_hint } => self.moved(leader_hint),
            ProposeError::NoLeader => self.no_leader(),
            ProposeError::Busy => try_again("busy: too many writes in flight"),
            ProposeError::Shutdown => shutting_down(),
            // Never MOVED or TRYAGAIN: clients take those for "not executed" and retry on
            // their own, which would apply an INCR twice.
            ProposeError::OutcomeUnknown => outcome_unknown(),
            error => Reply::error(error),
        }
    }

    /// Where `id` takes clients: the replicated book, else this node's `--peer` flags.
    pub fn client_address(&self, id: NodeId) -> Option<SocketAddr> {
        leader_address(&self.book, id)
            .or_else(|| self.configured.get(&id).map(|member| member.client))
    }

    /// `TRYAGAIN` while no leader is known; on a node that knows it was removed, an error
    /// that says so instead, as no leader will ever come for it.
    fn no_leader(&self) -> Reply {
        if self.membership.is_removed() {
            Reply::error(
                "this node was removed from the cluster: send commands to a member \
                 (RAFT.STATUS on a member names the leader)",
            )
        } else {
            try_again("no leader is known")
        }
    }

    /// `MOVED 0 <leader's client address>`, which `redis-cli -c` follows; `TRYAGAIN` when
    /// the book does not know where the leader listens yet.
    fn moved(&self, leader: NodeId) -> Reply {
        match self.client_address(leader) {
            Some(address) => Reply::Error(format!("MOVED 0 {address}")),
            None => try_again(&format!(
                "the leader is node {leader}, whose address is not known yet"
            )),
        }
    }
}

/// Where `leader` takes clients, if the book knows.
pub fn leader_address(book: &AddressBook, leader: NodeId) -> Option<SocketAddr> {
    book.read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .get(&leader)
        .map(|member| member.client)
}

/// The role as `RAFT.STATUS` and `INFO` name it.
pub fn role_name(role: Role, is_learner: bool) -> &'static str {
    if is_learner {
        return "learner";
    }
    match role {
        Role::Leader => "leader",
        Role::Candidate => "candidate",
        Role::PreCandidate => "precandidate",
        _ => "follower",
    }
}

/// `CLIENT` subcommands that client libraries send on connecting: accepted and ignored.
fn client(arguments: &[Bytes]) -> Reply {
    let Some(subcommand) = arguments.first() else {
        return Reply::error("wrong number of arguments for 'client' command");
    };
    match subcommand.to_ascii_uppercase().as_slice() {
        b"SETNAME" | b"SETINFO" | b"REPLY" => Reply::Simple("OK"),
        b"GETNAME" => Reply::Nil,
        b"ID" => Reply::Integer(0),
        _ => Reply::Array(Vec::new()),
    }
}

/// `CONFIG GET` for the two settings `redis-benchmark` asks about at start (no RDB saving, no
/// AOF: durability here is the Raft log's); nothing else is configurable through it.
fn config_get(arguments: &[Bytes]) -> Reply {
    let [subcommand, parameter] = arguments else {
        return Reply::Array(Vec::new());
    };
    if !subcommand.eq_ignore_ascii_case(b"GET") {
        return Reply::error("only CONFIG GET is supported");
    }
    let value: &'static [u8] = match parameter.to_ascii_lowercase().as_slice() {
        b"save" => b"",
        b"appendonly" => b"no",
        _ => return Reply::Array(Vec::new()),
    };
    Reply::Array(vec![
        Reply::Bulk(parameter.clone()),
        Reply::Bulk(Bytes::from_static(value)),
    ])
}

/// `-ERR unknown command '<name>'`, the name cut to at most [`UNKNOWN_NAME_ECHO_BYTES`]
/// bytes, before any character the cut would split.
fn unknown_command(given: &[u8]) -> Reply {
    // Three bytes past the limit complete any character that starts before it.
    let head = &given[..given.len().min(UNKNOWN_NAME_ECHO_BYTES + 3)];
    let text = String::from_utf8_lossy(head);
    let mut end = text.len().min(UNKNOWN_NAME_ECHO_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Reply::error(format!("unknown command '{}'", &text[..end]))
}

fn try_again(reason: &str) -> Reply {
    Reply::Error(format!("TRYAGAIN {reason}"))
}

/// The reply to a command that was appended to the log but whose fate the node could not
/// learn: an `-ERR` (which no Redis client retries by itself) that says so.
pub(crate) fn outcome_unknown() -> Reply {
    Reply::error(
        "outcome unknown: the command was appended but its leader lost its role before it \
         committed; it may or may not have been applied (read before retrying)",
    )
}

fn shutting_down() -> Reply {
    Reply::error("shutting down")
}

fn not_an_integer() -> Reply {
    Reply::error("value is not an integer")
}

fn node_id(argument: &[u8]) -> Result<NodeId, Reply> {
    std::str::from_utf8(argument)
        .ok()
        .and_then(|text| text.parse::<u64>().ok())
        .and_then(NodeId::new)
        .ok_or_else(|| Reply::error("node id must be a positive integer"))
}

fn address(argument: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(argument).ok()?.parse().ok()
}

/// How many arguments (after the name) a command takes.
#[derive(Clone, Copy)]
enum Arity {
    Exactly(usize),
    AtLeast(usize),
    Between(usize, usize),
}

impl Arity {
    fn accepts(self, count: usize) -> bool {
        match self {
            Arity::Exactly(n) => count == n,
            Arity::AtLeast(n) => count >= n,
            Arity::Between(low, high) => (low..=high).contains(&count),
        }
    }
}

fn arity(name: &str) -> Option<Arity> {
    Some(match name {
        "PING" => Arity::Between(0, 1),
        "ECHO" | "GET" | "INCR" | "DECR" | "STRLEN" | "SELECT" | "RAFT.PROMOTE" | "RAFT.REMOVE"
        | "RAFT.TRANSFER" => Arity::Exactly(1),
        "SET" => Arity::AtLeast(2),
        "INCRBY" | "DECRBY" => Arity::Exactly(2),
        "CAS" | "RAFT.ADDLEARNER" => Arity::Exactly(3),
        "DEL" | "EXISTS" | "MGET" => Arity::AtLeast(1),
        "DBSIZE" | "QUIT" | "RAFT.STATUS" | "RAFT.SNAPSHOT" => Arity::Exactly(0),
        "INFO" => Arity::Between(0, 1),
        "COMMAND" | "CONFIG" | "CLIENT" => Arity::AtLeast(0),
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use yggr::{Bootstrap, Config, LocalNetwork, MemStorage};

    /// A service over a one-node cluster in memory. The node is not waited on: the tests that
    /// use it exercise what is answered before any command reaches the node.
    pub(crate) async fn lone_service() -> Service {
        let me = NodeId::new(1).expect("1 is a node id");
        let mut config = Config::new(me, []);
        config.bootstrap = Bootstrap::NewCluster {
            members: [me].into(),
        };
        let book = AddressBook::default();
        let node = Node::start(
            config,
            KvStore::new(me, book.clone(), None),
            MemStorage::new(),
            LocalNetwork::new().transport(me),
        )
        .await
        .expect("a one-node cluster in memory starts");
        Service::new(node, book, BTreeMap::new())
    }

    #[tokio::test]
    async fn an_unknown_command_echoes_at_most_128_bytes_of_its_name() {
        let service = lone_service().await;
        let name = Bytes::from(vec![b'x'; 60 << 10]);
        let Reply::Error(text) = service.execute(&[name]).await else {
            panic!("an unknown command is an error");
        };
        assert!(text.starts_with("ERR unknown command 'xxx"), "{text}");
        let echoed = text.bytes().filter(|byte| *byte == b'x').count();
        assert_eq!(echoed, UNKNOWN_NAME_ECHO_BYTES);
        // A cut that would fall inside a multi-byte character falls before it instead.
        let mut name = vec![b'a'; UNKNOWN_NAME_ECHO_BYTES - 1];
        name.extend_from_slice("é".as_bytes());
        let Reply::Error(text) = service.execute(&[Bytes::from(name)]).await else {
            panic!("an unknown command is an error");
        };
        let expected = format!(
            "ERR unknown command '{}'",
            "a".repeat(UNKNOWN_NAME_ECHO_BYTES - 1)
        );
        assert_eq!(text, expected);
    }
}
