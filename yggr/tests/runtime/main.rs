//! The runtime's integration tests, in one binary (one link per build instead of one per
//! file). Most run on tokio's paused clock: elections and delays take no real time.

mod common;

mod apply;
mod apply_backlog;
mod apply_failures;
mod bootstrap;
mod chaos;
mod config_limits;
mod crash_safety;
mod disk_and_tcp;
mod disk_corruption;
mod disk_storage;
mod disk_tcp_review;
mod failures;
mod fatal_stop;
mod large_entries;
mod leader_write_overlap;
mod membership;
mod operations;
mod process_stall;
mod reads;
mod review_findings;
mod smoke;
mod snapshot_durability;
mod snapshot_off_the_path;
mod snapshot_retry;
mod snapshot_trigger;
mod tcp_identity;
mod tcp_idle;
mod tcp_options;
mod tcp_stats;
mod tcp_tls;
mod tick_clock;
mod write_fate;
mod writes;
