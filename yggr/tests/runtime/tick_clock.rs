//! The driver's clock keeps ticking past `u32::MAX` ticks (an earlier clock multiplied the
//! interval by a `u32` tick count, saturated there, and spun forever: 49.7 days of uptime at a
//! 1 ms tick). Reached here with 1 ns ticks on tokio's paused clock, on a thread of its own so
//! that a hang is a failure rather than a timeout. Slow: 2³² ticks take about 90 s.

use std::sync::mpsc;
use std::time::Duration;

use crate::common::*;
use yggr::{Bootstrap, LocalNetwork, MemStorage, Node};

#[test]
fn the_driver_keeps_answering_after_u32_max_ticks() {
    let (report, phases) = mpsc::channel::<&'static str>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let network = LocalNetwork::new();
            let mut config = test_config(id(1), []);
            // A lone joiner with no election in sight: every tick is as cheap as it gets.
            config.bootstrap = Bootstrap::Join;
            config.tick_interval = Duration::from_nanos(1);
            config.election_timeout_min_ticks = 1 << 40;
            config.election_timeout_max_ticks = (1 << 40) + 1;
            let origin = tokio::time::Instant::now();
            let node = Node::start(
                config,
                Recorder::default(),
                MemStorage::new(),
                network.transport(id(1)),
            )
            .await
            .unwrap();
            // Just short of u32::MAX ticks: the node answers.
            let before = Duration::from_nanos(u64::from(u32::MAX) - 100_000);
            tokio::time::advance(before.saturating_sub(origin.elapsed())).await;
            node.status().await.unwrap();
            report.send("answered before the limit").unwrap();
            // Just past it.
            tokio::time::advance(Duration::from_nanos(200_000)).await;
            node.status().await.unwrap();
            report.send("answered after the limit").unwrap();
        });
    });
    assert_eq!(
        phases.recv_timeout(Duration::from_secs(280)),
        Ok("answered before the limit"),
        "the node should deliver ~4.29e9 ticks and answer (slow machine?)"
    );
    assert_eq!(
        phases.recv_timeout(Duration::from_secs(20)),
        Ok("answered after the limit"),
        "after u32::MAX ticks the driver spins in deliver_due_ticks and never answers again"
    );
}
