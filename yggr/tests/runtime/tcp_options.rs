//! `TcpOptions` are checked when the transport starts: a zero, tiny or absurd duration or
//! limit is refused with an `InvalidInput` error naming the field, instead of busy-looping
//! (a zero reconnect backoff), closing every connection (a zero idle timeout) or panicking
//! later (a queue too large for a channel).

use std::io;
use std::time::Duration;

use yggr::{TcpOptions, TcpOptionsError, TcpTransport};

use crate::common::id;

/// Starts a transport with the defaults changed by `change`, and returns its refusal.
async fn refusal(change: impl FnOnce(&mut TcpOptions)) -> io::Error {
    let mut options = TcpOptions::default();
    change(&mut options);
    let started = TcpTransport::start_with(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [(id(2), "127.0.0.1:9".parse().unwrap())],
        options.clone(),
    )
    .await;
    match started {
        Ok(_) => panic!("options {options:?} were accepted"),
        Err(error) => error,
    }
}

/// `change` is refused as InvalidInput, holding a `TcpOptionsError` for `field`, with a
/// message naming it.
async fn refused_naming(field: &str, change: impl FnOnce(&mut TcpOptions)) {
    let error = refusal(change).await;
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    assert!(
        error.to_string().contains(field),
        "the error names {field}: {error}"
    );
    let typed = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<TcpOptionsError>());
    assert_eq!(typed.map(TcpOptionsError::field), Some(field), "{error:?}");
}

#[tokio::test]
async fn the_default_options_and_the_floors_are_accepted() {
    assert_eq!(TcpOptions::default().validate(), Ok(()));
    let mut smallest = TcpOptions::default();
    smallest.max_frame_bytes = yggr::transport::tcp::MIN_FRAME_BYTES;
    smallest.idle_timeout = yggr::transport::tcp::MIN_IDLE_TIMEOUT;
    smallest.reconnect_backoff_min = yggr::transport::tcp::MIN_TCP_DURATION;
    smallest.reconnect_backoff_max = yggr::transport::tcp::MIN_TCP_DURATION;
    assert_eq!(smallest.validate(), Ok(()));
    let started = TcpTransport::start_with(
        id(1),
        "127.0.0.1:0".parse().unwrap(),
        [(id(2), "127.0.0.1:9".parse().unwrap())],
        TcpOptions::default(),
    )
    .await;
    assert!(started.is_ok(), "{:?}", started.err());
}

#[tokio::test]
async fn a_zero_or_absurd_frame_limit_is_refused() {
    refused_naming("max_frame_bytes", |o| o.max_frame_bytes = 0).await;
    // Not even a vote would fit.
    refused_naming("max_frame_bytes", |o| o.max_frame_bytes = 16).await;
    // A frame's length travels as a u32.
    refused_naming("max_frame_bytes", |o| o.max_frame_bytes = usize::MAX).await;
}

#[tokio::test]
async fn zero_or_absurd_queue_and_connection_limits_are_refused() {
    refused_naming("outbound_queue", |o| o.outbound_queue = 0).await;
    refused_naming("outbound_queue", |o| o.outbound_queue = usize::MAX).await;
    refused_naming("inbound_queue", |o| o.inbound_queue = 0).await;
    refused_naming("inbound_queue", |o| o.inbound_queue = usize::MAX).await;
    refused_naming("max_inbound_connections", |o| o.max_inbound_connections = 0).await;
    refused_naming("max_inbound_connections", |o| {
        o.max_inbound_connections = usize::MAX
    })
    .await;
    refused_naming("max_pending_handshakes", |o| o.max_pending_handshakes = 0).await;
    refused_naming("max_pending_handshakes", |o| {
        o.max_pending_handshakes = usize::MAX
    })
    .await;
}

#[tokio::test]
async fn zero_or_absurd_timeouts_are_refused() {
    refused_naming("handshake_timeout", |o| {
        o.handshake_timeout = Duration::ZERO
    })
    .await;
    refused_naming("handshake_timeout", |o| o.handshake_timeout = Duration::MAX).await;
    refused_naming("io_timeout", |o| o.io_timeout = Duration::ZERO).await;
    refused_naming("io_timeout", |o| o.io_timeout = Duration::MAX).await;
    refused_naming("idle_timeout", |o| o.idle_timeout = Duration::ZERO).await;
    refused_naming("idle_timeout", |o| o.idle_timeout = Duration::MAX).await;
}

/// Keep-alives go every third of the idle timeout; far below the floor they would race the
/// scheduler, and connections between live peers would be closed.
#[tokio::test]
async fn an_idle_timeout_below_the_floor_is_refused() {
    refused_naming("idle_timeout", |o| {
        o.idle_timeout = Duration::from_millis(1)
    })
    .await;
    refused_naming("idle_timeout", |o| {
        o.idle_timeout = Duration::from_millis(49)
    })
    .await;
}

/// A zero backoff made a writer to an unreachable peer reconnect in a busy loop.
#[tokio::test]
async fn a_zero_absurd_or_inverted_reconnect_backoff_is_refused() {
    refused_naming("reconnect_backoff_min", |o| {
        o.reconnect_backoff_min = Duration::ZERO
    })
    .await;
    refused_naming("reconnect_backoff_max", |o| {
        o.reconnect_backoff_max = Duration::ZERO
    })
    .await;
    refused_naming("reconnect_backoff_max", |o| {
        o.reconnect_backoff_max = Duration::MAX
    })
    .await;
    refused_naming("reconnect_backoff_min", |o| {
        o.reconnect_backoff_min = Duration::from_secs(3);
        o.reconnect_backoff_max = Duration::from_secs(2);
    })
    .await;
}
