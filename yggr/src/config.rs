//! How a node runs: timing, limits, batching, snapshots, and how it first comes up.

use std::collections::BTreeSet;
use std::time::Duration;

use yggr_core::{EngineConfig, NodeId};

/// How a node comes up the first time it starts on its storage.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bootstrap {
    /// The first start of a brand-new cluster: every founding node starts with the same
    /// `members`, this node among them. Over storage that already holds state, the node
    /// recovers that state instead and never writes a second founding configuration.
    NewCluster {
        /// The founding voters.
        members: BTreeSet<NodeId>,
    },
    /// A node that will be added to a running cluster. It starts knowing no members, never
    /// campaigns, and waits until a leader adds it (as a learner or a voter).
    Join,
    /// A restart: everything comes from storage, which must hold this node's state.
    Recover,
}

/// Everything a [`Node`](crate::Node) needs to run. Build one with [`Config::new`] and change
/// the fields you need; [`Config::validate`] checks them (and [`Node::start`] calls it).
///
/// Times are in ticks; a tick lasts `tick_interval`.
///
/// [`Node::start`]: crate::Node::start
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node's id.
    pub node_id: NodeId,
    /// The other founding members, as given to [`Config::new`]. With
    /// [`Bootstrap::NewCluster`] they must agree with its members (when not empty); with
    /// `Recover` or `Join` they are not used.
    pub peers: BTreeSet<NodeId>,
    /// Lower bound of the randomized election timeout (§5.2), inclusive. Default 10.
    pub election_timeout_min_ticks: u64,
    /// Upper bound of the randomized election timeout, exclusive. Default 20.
    pub election_timeout_max_ticks: u64,
    /// How often a leader sends heartbeats; below the minimum election timeout. Default 3.
    pub heartbeat_interval_ticks: u64,
    /// The wall-clock length of one tick. Default 50 ms.
    pub tick_interval: Duration,
    /// Proposals (writes and membership changes) in flight at once; more get
    /// [`ProposeError::Busy`](crate::ProposeError::Busy). Default 1024.
    pub max_pending_proposals: usize,
    /// Capacity of the channel from the driver to the apply task. When it is full, jobs wait
    /// in order in the driver, which goes on ticking and replicating; once 64 times this many
    /// wait, the driver also sets new writes and reads aside until the state machine catches
    /// up. Default 4096.
    pub max_pending_applies: usize,
    /// Hold proposals for up to this many ticks to gather larger batches. Default 0: every
    /// driver iteration sends what is queued at once (which already batches under load).
    pub max_batch_delay_ticks: u64,
    /// With a batch delay, send as soon as this many proposals are held. Default 64.
    pub max_batch_entries: usize,
    /// Hint a snapshot each time this many entries were applied past the last one. Zero
    /// disables. Default 1024.
    pub snapshot_hint_threshold_entries: u64,
    /// Hint a snapshot whenever the live log holds more entries than this. Zero disables.
    /// Default 0.
    pub max_log_entries: u64,
    /// Most bytes per InstallSnapshot chunk. Default 64 KiB. Keep it below the transport's
    /// largest message ([`TcpOptions::max_frame_bytes`](crate::TcpOptions::max_frame_bytes)).
    pub snapshot_chunk_size_bytes: usize,
    /// The largest encoded command a write may carry; larger ones get
    /// [`ProposeError::TooLarge`](crate::ProposeError::TooLarge). Every entry must fit one
    /// transport message, so keep it below the transport's largest message
    /// ([`TcpOptions::max_frame_bytes`](crate::TcpOptions::max_frame_bytes), 64 MiB by
    /// default). At most [`MAX_COMMAND_BYTES`]. Default 16 MiB.
    pub max_command_bytes: usize,
    /// Probe with pre-votes before campaigning (thesis §9.6). Default true.
    pub pre_vote: bool,
    /// Leader lease for reads (§9): zero disables. Must be below
    /// `election_timeout_min_ticks - heartbeat_interval_ticks`, and is only as safe as the
    /// bound on clock drift between nodes. Default 0.
    pub lease_duration_ticks: u64,
    /// How long a leader that lost its role keeps waiting to learn the fate of the writes and
    /// membership changes it had appended. It stays on as a follower: an entry that commits
    /// answers its writer with the state machine's response, one that another leader's
    /// committed entry replaces answers with a definite `NotLeader`/`NoLeader`. Whatever is
    /// still unknown after this many ticks is answered
    /// [`ProposeError::OutcomeUnknown`](crate::ProposeError::OutcomeUnknown). Zero answers
    /// them at once. Default 40 (two of the default longest election timeouts).
    pub outcome_wait_ticks: u64,
    /// How the node first comes up.
    pub bootstrap: Bootstrap,
    /// Seed for the election-timeout randomness; `None` draws one from the operating system.
    /// Set it for reproducible tests.
    pub random_seed: Option<u64>,
}

impl Config {
    /// A configuration with every default. With `peers`, the node founds a new cluster of
    /// itself and them ([`Bootstrap::NewCluster`]); with none, it recovers from storage
    /// ([`Bootstrap::Recover`]). Set `bootstrap` to [`Bootstrap::Join`] for a node that a
    /// running cluster will add.
    pub fn new(node_id: NodeId, peers: impl IntoIterator<Item = NodeId>) -> Config {
        let peers: BTreeSet<NodeId> = peers.into_iter().collect();
        let bootstrap = if peers.is_empty() {
            Bootstrap::Recover
        } else {
            Bootstrap::NewCluster {
                members: peers.iter().copied().chain([node_id]).collect(),
            }
        };
        let engine = EngineConfig::default();
        Config {
            node_id,
            peers,
            election_timeout_min_ticks: engine.election_timeout_min_ticks,
            election_timeout_max_ticks: engine.election_timeout_max_ticks,
            heartbeat_interval_ticks: engine.heartbeat_interval_ticks,
            tick_interval: Duration::from_millis(50),
            max_pending_proposals: 1024,
            max_pending_applies: 4096,
            max_batch_delay_ticks: 0,
            max_batch_entries: 64,
            snapshot_hint_threshold_entries: engine.snapshot_hint_threshold_entries,
            max_log_entries: engine.max_log_entries,
            snapshot_chunk_size_bytes: engine.snapshot_chunk_size_bytes,
            max_command_bytes: 16 << 20,
            pre_vote: engine.pre_vote,
            lease_duration_ticks: engine.lease_duration_ticks,
            outcome_wait_ticks: 2 * engine.election_timeout_max_ticks,
            bootstrap,
            random_seed: None,
        }
    }

    /// Checks every field and the relations between them before anything starts.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.peers.contains(&self.node_id) {
            return Err(ConfigError::PeersContainSelf { id: self.node_id });
        }
        if let Bootstrap::NewCluster { members } = &self.bootstrap {
            if !members.contains(&self.node_id) {
                return Err(ConfigError::NotAFoundingMember {
                    id: self.node_id,
                    members: members.iter().copied().collect(),
                });
            }
            // With peers given, they and the founding members must describe one cluster:
            // otherwise one of the two is silently wrong.
            let others: BTreeSet<NodeId> = members
                .iter()
                .copied()
                .filter(|member| *member != self.node_id)
                .collect();
            if !self.peers.is_empty() && self.peers != others {
                return Err(ConfigError::PeersDisagreeWithMembers {
                    peers: self.peers.iter().copied().collect(),
                    members: members.iter().copied().collect(),
                });
            }
        }
        if self.tick_interval.is_zero() {
            return Err(ConfigError::ZeroLimit {
                field: "tick_interval",
            });
        }
        if self.tick_interval > MAX_TICK_INTERVAL {
            return Err(ConfigError::TooLarge {
                field: "tick_interval",
                max: format!("{MAX_TICK_INTERVAL:?}"),
            });
        }
        for (field, value) in [
            ("max_pending_proposals", self.max_pending_proposals),
            ("max_pending_applies", self.max_pending_applies),
            ("max_batch_entries", self.max_batch_entries),
            ("snapshot_chunk_size_bytes", self.snapshot_chunk_size_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
            if value > MAX_QUEUE_LIMIT {
                return Err(ConfigError::TooLarge {
                    field,
                    max: MAX_QUEUE_LIMIT.to_string(),
                });
            }
        }
        if self.max_command_bytes == 0 {
            return Err(ConfigError::ZeroLimit {
                field: "max_command_bytes",
            });
        }
        if self.max_command_bytes > MAX_COMMAND_BYTES {
            return Err(ConfigError::TooLarge {
                field: "max_command_bytes",
                max: MAX_COMMAND_BYTES.to_string(),
            });
        }
        self.engine_config().validate().map_err(ConfigError::from)
    }

    /// The engine's share of this configuration.
    pub(crate) fn engine_config(&self) -> EngineConfig {
        EngineConfig {
            election_timeout_min_ticks: self.election_timeout_min_ticks,
            election_timeout_max_ticks: self.election_timeout_max_ticks,
            heartbeat_interval_ticks: self.heartbeat_interval_ticks,
            pre_vote: self.pre_vote,
            snapshot_chunk_size_bytes: self.snapshot_chunk_size_bytes,
            snapshot_hint_threshold_entries: self.snapshot_hint_threshold_entries,
            max_log_entries: self.max_log_entries,
            lease_duration_ticks: self.lease_duration_ticks,
            ..EngineConfig::default()
        }
    }
}

/// The largest `max_pending_proposals`, `max_pending_applies`, `max_batch_entries` and
/// `snapshot_chunk_size_bytes` accepted (2³⁰): far above any useful value, and within what
/// tokio's bounded channels can hold.
pub const MAX_QUEUE_LIMIT: usize = 1 << 30;

/// The most linearizable reads a leader sets aside while its apply backlog is full; more are
/// refused with [`ReadError::Busy`](crate::ReadError::Busy). (Writes need no bound of their
/// own: each one set aside holds a unit of `max_pending_proposals`.)
pub const MAX_PARKED_READS: usize = 4096;

/// The largest `max_command_bytes` accepted (128 MiB): a log entry must fit one record of
/// [`DiskStorage`](crate::DiskStorage) with room to spare.
pub const MAX_COMMAND_BYTES: usize = 128 << 20;

/// The longest `tick_interval` accepted: an hour.
pub const MAX_TICK_INTERVAL: Duration = Duration::from_secs(3600);

/// A configuration refused before the node starts. Each message names the fields involved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The election timeout range is empty or starts at zero.
    #[error(
        "election_timeout_min_ticks ({min}) must be above zero and below election_timeout_max_ticks ({max}), which is exclusive"
    )]
    InvalidElectionTimeoutRange {
        /// `election_timeout_min_ticks`.
        min: u64,
        /// `election_timeout_max_ticks`.
        max: u64,
    },
    /// Heartbeats must come more often than elections.
    #[error(
        "heartbeat_interval_ticks ({heartbeat}) must be above zero and below election_timeout_min_ticks ({election_min})"
    )]
    InvalidHeartbeatInterval {
        /// `heartbeat_interval_ticks`.
        heartbeat: u64,
        /// `election_timeout_min_ticks`.
        election_min: u64,
    },
    /// A lease must end before another node could be elected.
    #[error(
        "lease_duration_ticks ({lease}) must be below election_timeout_min_ticks - heartbeat_interval_ticks ({limit})"
    )]
    LeaseTooLong {
        /// `lease_duration_ticks`.
        lease: u64,
        /// The exclusive bound.
        limit: u64,
    },
    /// A limit that must be positive is zero.
    #[error("{field} must be above zero")]
    ZeroLimit {
        /// The field.
        field: &'static str,
    },
    /// `peers` names this node itself.
    #[error("peers must not contain this node's own id ({id})")]
    PeersContainSelf {
        /// This node's id.
        id: NodeId,
    },
    /// Any other refusal of the engine's (its membership checks, or ones added later).
    #[error(transparent)]
    Engine(yggr_core::ConfigError),
    /// A value above what the runtime can hold.
    #[error("{field} must be at most {max}")]
    TooLarge {
        /// The field.
        field: &'static str,
        /// The largest value accepted.
        max: String,
    },
    /// `peers` and the founding members of [`Bootstrap::NewCluster`] name different clusters.
    #[error(
        "peers {peers:?} disagree with the bootstrap members {members:?}: with peers given, the members must be exactly this node and its peers"
    )]
    PeersDisagreeWithMembers {
        /// `peers`.
        peers: Vec<NodeId>,
        /// The founding members.
        members: Vec<NodeId>,
    },
    /// A new cluster's founding members do not include this node.
    #[error("bootstrap members {members:?} do not include this node ({id})")]
    NotAFoundingMember {
        /// This node's id.
        id: NodeId,
        /// The founding members given.
        members: Vec<NodeId>,
    },
}

impl From<yggr_core::ConfigError> for ConfigError {
    fn from(error: yggr_core::ConfigError) -> ConfigError {
        use yggr_core::ConfigError as Engine;
        match error {
            Engine::InvalidElectionTimeoutRange { min, max } => {
                ConfigError::InvalidElectionTimeoutRange { min, max }
            }
            Engine::InvalidHeartbeatInterval {
                heartbeat,
                election_min,
            } => ConfigError::InvalidHeartbeatInterval {
                heartbeat,
                election_min,
            },
            Engine::LeaseTooLong { lease, limit } => ConfigError::LeaseTooLong { lease, limit },
            Engine::ZeroLimit { field } => ConfigError::ZeroLimit { field },
            other => ConfigError::Engine(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(raw: u64) -> NodeId {
        NodeId::new(raw).unwrap()
    }

    #[test]
    fn new_picks_new_cluster_with_peers_and_recover_without() {
        let founder = Config::new(id(1), [id(2), id(3)]);
        assert_eq!(
            founder.bootstrap,
            Bootstrap::NewCluster {
                members: [id(1), id(2), id(3)].into_iter().collect()
            }
        );
        assert_eq!(Config::new(id(1), []).bootstrap, Bootstrap::Recover);
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = Config::new(id(1), [id(2)]);
        assert_eq!(config.election_timeout_min_ticks, 10);
        assert_eq!(config.election_timeout_max_ticks, 20);
        assert_eq!(config.heartbeat_interval_ticks, 3);
        assert_eq!(config.tick_interval, Duration::from_millis(50));
        assert_eq!(config.max_pending_proposals, 1024);
        assert_eq!(config.max_pending_applies, 4096);
        assert_eq!(config.max_batch_delay_ticks, 0);
        assert_eq!(config.max_batch_entries, 64);
        assert_eq!(config.snapshot_hint_threshold_entries, 1024);
        assert_eq!(config.max_log_entries, 0);
        assert_eq!(config.snapshot_chunk_size_bytes, 64 * 1024);
        assert!(config.pre_vote);
        assert_eq!(config.lease_duration_ticks, 0);
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn every_pre_flight_rule_is_enforced() {
        let base = Config::new(id(1), [id(2), id(3)]);
        let mut config = base.clone();
        config.peers.insert(id(1));
        assert_eq!(
            config.validate(),
            Err(ConfigError::PeersContainSelf { id: id(1) })
        );
        let mut config = base.clone();
        config.election_timeout_max_ticks = 10;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidElectionTimeoutRange { min: 10, max: 10 })
        ));
        let mut config = base.clone();
        config.heartbeat_interval_ticks = 10;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidHeartbeatInterval { .. })
        ));
        let mut config = base.clone();
        config.lease_duration_ticks = 7;
        assert_eq!(
            config.validate(),
            Err(ConfigError::LeaseTooLong { lease: 7, limit: 7 })
        );
        for field in [
            "max_pending_proposals",
            "max_pending_applies",
            "max_batch_entries",
            "snapshot_chunk_size_bytes",
            "tick_interval",
        ] {
            let mut config = base.clone();
            match field {
                "max_pending_proposals" => config.max_pending_proposals = 0,
                "max_pending_applies" => config.max_pending_applies = 0,
                "max_batch_entries" => config.max_batch_entries = 0,
                "snapshot_chunk_size_bytes" => config.snapshot_chunk_size_bytes = 0,
                _ => config.tick_interval = Duration::ZERO,
            }
            assert_eq!(config.validate(), Err(ConfigError::ZeroLimit { field }));
        }
        let mut config = base.clone();
        config.bootstrap = Bootstrap::NewCluster {
            members: [id(2), id(3)].into_iter().collect(),
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::NotAFoundingMember { .. })
        ));
        let mut config = base.clone();
        config.bootstrap = Bootstrap::NewCluster {
            members: [id(1), id(2), id(4)].into_iter().collect(),
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::PeersDisagreeWithMembers { .. })
        ));
        // Without peers the members decide; with Recover or Join peers are not used.
        let mut config = Config::new(id(1), []);
        config.bootstrap = Bootstrap::NewCluster {
            members: [id(1), id(2)].into_iter().collect(),
        };
        assert_eq!(config.validate(), Ok(()));
        let mut config = base.clone();
        config.bootstrap = Bootstrap::Join;
        assert_eq!(config.validate(), Ok(()));
        let mut config = base.clone();
        config.max_pending_applies = usize::MAX;
        assert_eq!(
            config.validate(),
            Err(ConfigError::TooLarge {
                field: "max_pending_applies",
                max: MAX_QUEUE_LIMIT.to_string(),
            })
        );
        let mut config = base;
        config.tick_interval = Duration::MAX;
        assert!(matches!(
            config.validate(),
            Err(ConfigError::TooLarge {
                field: "tick_interval",
                ..
            })
        ));
    }
}
