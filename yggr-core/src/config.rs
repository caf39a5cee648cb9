//! The engine's tunables and their validation.

/// Limits and timings for one [`Engine`](crate::Engine). All times are in ticks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Lower bound of the randomized election timeout (§5.2), inclusive.
    pub election_timeout_min_ticks: u64,
    /// Upper bound of the randomized election timeout, exclusive.
    pub election_timeout_max_ticks: u64,
    /// How often a leader sends heartbeats. Must be below `election_timeout_min_ticks`.
    pub heartbeat_interval_ticks: u64,
    /// Whether to probe with pre-votes (thesis §9.6) before starting a real election.
    pub pre_vote: bool,
    /// The most entries one AppendEntries message carries.
    pub max_entries_per_append: usize,
    /// How many AppendEntries a leader may have unacknowledged per follower while pipelining.
    pub max_inflight_appends: usize,
    /// The most snapshot bytes one InstallSnapshot chunk carries.
    pub snapshot_chunk_size_bytes: usize,
    /// Emit a snapshot hint each time this many entries have been applied past the snapshot
    /// floor. Zero disables.
    pub snapshot_hint_threshold_entries: u64,
    /// Emit a snapshot hint whenever the live log (entries above the floor) exceeds this. Zero
    /// disables.
    pub max_log_entries: u64,
    /// Leader lease (§9): serve reads without a round trip when a majority acknowledged within
    /// this many ticks. Zero disables. Must be below `election_timeout_min_ticks -
    /// heartbeat_interval_ticks`.
    pub lease_duration_ticks: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            election_timeout_min_ticks: 10,
            election_timeout_max_ticks: 20,
            heartbeat_interval_ticks: 3,
            pre_vote: true,
            max_entries_per_append: 256,
            max_inflight_appends: 32,
            snapshot_chunk_size_bytes: 64 * 1024,
            snapshot_hint_threshold_entries: 1024,
            max_log_entries: 0,
            lease_duration_ticks: 0,
        }
    }
}

/// Why an [`EngineConfig`] (or the engine built from it) was refused. Each message names the
/// fields involved and their values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The election timeout range is empty or starts at zero.
    #[error(
        "election_timeout_min_ticks ({min}) must be above zero and below election_timeout_max_ticks ({max}), which is exclusive"
    )]
    InvalidElectionTimeoutRange {
        /// The configured minimum.
        min: u64,
        /// The configured (exclusive) maximum.
        max: u64,
    },
    /// Heartbeats must come more often than elections, or followers campaign against a healthy
    /// leader.
    #[error(
        "heartbeat_interval_ticks ({heartbeat}) must be above zero and below election_timeout_min_ticks ({election_min})"
    )]
    InvalidHeartbeatInterval {
        /// The configured heartbeat interval.
        heartbeat: u64,
        /// The configured minimum election timeout.
        election_min: u64,
    },
    /// A lease must expire before any other node could be elected (§9).
    #[error(
        "lease_duration_ticks ({lease}) must be below election_timeout_min_ticks - heartbeat_interval_ticks ({limit})"
    )]
    LeaseTooLong {
        /// The configured lease.
        lease: u64,
        /// The exclusive upper bound it must stay under.
        limit: u64,
    },
    /// A limit that must be positive was zero.
    #[error("{field} must be above zero")]
    ZeroLimit {
        /// The field's name.
        field: &'static str,
    },
    /// The founding configuration does not name this node. A node joining a running cluster
    /// starts from an empty configuration instead.
    #[error(
        "node {id} is not in its founding configuration (voters {voters:?}, learners {learners:?}); a joining node starts from an empty one"
    )]
    NotAMember {
        /// This node's id.
        id: crate::types::NodeId,
        /// The founding voters given.
        voters: Vec<crate::types::NodeId>,
        /// The founding learners given.
        learners: Vec<crate::types::NodeId>,
    },
}

impl EngineConfig {
    /// Checks every field and the relations between them.
    ///
    /// # Errors
    /// The first [`ConfigError`] found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let min = self.election_timeout_min_ticks;
        let max = self.election_timeout_max_ticks;
        if min == 0 || max <= min {
            return Err(ConfigError::InvalidElectionTimeoutRange { min, max });
        }
        let heartbeat = self.heartbeat_interval_ticks;
        if heartbeat == 0 || heartbeat >= min {
            return Err(ConfigError::InvalidHeartbeatInterval {
                heartbeat,
                election_min: min,
            });
        }
        if self.lease_duration_ticks > 0 {
            let limit = min - heartbeat;
            if self.lease_duration_ticks >= limit {
                return Err(ConfigError::LeaseTooLong {
                    lease: self.lease_duration_ticks,
                    limit,
                });
            }
        }
        for (field, value) in [
            ("max_entries_per_append", self.max_entries_per_append),
            ("max_inflight_appends", self.max_inflight_appends),
            ("snapshot_chunk_size_bytes", self.snapshot_chunk_size_bytes),
        ] {
            if value == 0 {
                return Err(ConfigError::ZeroLimit { field });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_documented_values() {
        let config = EngineConfig::default();
        assert_eq!(config.validate(), Ok(()));
        assert_eq!(config.election_timeout_min_ticks, 10);
        assert_eq!(config.election_timeout_max_ticks, 20);
        assert_eq!(config.heartbeat_interval_ticks, 3);
        assert!(config.pre_vote);
        assert_eq!(config.snapshot_chunk_size_bytes, 64 * 1024);
        assert_eq!(config.snapshot_hint_threshold_entries, 1024);
        assert_eq!(config.max_log_entries, 0);
        assert_eq!(config.lease_duration_ticks, 0);
    }

    #[test]
    fn empty_election_range_is_rejected() {
        let config = EngineConfig {
            election_timeout_max_ticks: 10,
            ..EngineConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidElectionTimeoutRange { .. })
        ));
    }

    #[test]
    fn heartbeat_at_or_above_election_minimum_is_rejected() {
        let config = EngineConfig {
            heartbeat_interval_ticks: 10,
            ..EngineConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::InvalidHeartbeatInterval { .. })
        ));
    }

    #[test]
    fn lease_must_end_before_a_rival_could_be_elected() {
        let at_limit = EngineConfig {
            lease_duration_ticks: 7,
            ..EngineConfig::default()
        };
        assert_eq!(
            at_limit.validate(),
            Err(ConfigError::LeaseTooLong { lease: 7, limit: 7 })
        );
        let below = EngineConfig {
            lease_duration_ticks: 6,
            ..EngineConfig::default()
        };
        assert_eq!(below.validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_fields_involved_and_their_values() {
        let config = EngineConfig {
            election_timeout_min_ticks: 2,
            ..EngineConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(
            message.contains("election_timeout_min_ticks (2)")
                && message.contains("heartbeat_interval_ticks (3)"),
            "{message}"
        );
        let config = EngineConfig {
            election_timeout_max_ticks: 5,
            ..EngineConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(
            message.contains("election_timeout_min_ticks (10)")
                && message.contains("election_timeout_max_ticks (5)"),
            "{message}"
        );
        let config = EngineConfig {
            lease_duration_ticks: 9,
            ..EngineConfig::default()
        };
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("lease_duration_ticks (9)"), "{message}");
    }

    #[test]
    fn zero_limits_are_rejected() {
        let config = EngineConfig {
            max_inflight_appends: 0,
            ..EngineConfig::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::ZeroLimit {
                field: "max_inflight_appends"
            })
        );
    }
}
