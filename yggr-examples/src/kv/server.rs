//! The client listener: one task per connection, bounded by a semaphore. A connection reads
//! into a buffer, takes every whole command off it, runs them in order (a pipelined client
//! gets its replies in order) and writes all their replies with one write.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::commands::Service;
use super::resp::{CommandParser, Limits, Reply};

/// Limits of the client listener.
#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    /// Input limits per command.
    pub limits: Limits,
    /// Connections served at once; one more is told so and closed.
    pub max_connections: usize,
}

impl Default for ServerOptions {
    fn default() -> ServerOptions {
        ServerOptions {
            limits: Limits::default(),
            max_connections: 1024,
        }
    }
}

/// Serves clients on `listener` until `stop` turns true: from then on no connection is
/// accepted, and each open one closes once the command it is running (if any) has been
/// answered. Returns the connections still open, for the caller to await once the node has
/// drained (the commands they run then answer `-ERR shutting down` or their result).
pub async fn serve(
    listener: TcpListener,
    service: Service,
    options: ServerOptions,
    mut stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow with every one ever served.
        while connections.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => return connections,
        };
        let (stream, peer) = match accepted {
            Ok(connection) => connection,
            Err(error) => {
                // Out of file descriptors, say: back off a little instead of spinning.
                warn!(target: "kv", %error, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let service = service.clone();
        let limits = options.limits;
        let stop = stop.clone();
        connections.spawn(async move {
            if let Err(error) = connection(stream, &service, limits, stop).await {
                debug!(target: "kv", %peer, %error, "connection closed");
            }
            drop(permit);
        });
    }
}

async fn refuse(mut stream: TcpStream) {
    let mut out = BytesMut::new();
    Reply::error("max number of clients reached").encode(&mut out);
    let _ = stream.write_all(&out).await;
}

/// Replies gathered past this many bytes are written before the next command runs: a client
/// that pipelines many large reads without reading the answers holds at most this much (and
/// one reply) of the server's memory.
const OUTPUT_FLUSH_BYTES: usize = 64 << 10;

/// Serves one client until it disconnects, sends `QUIT`, breaks the framing, or the server
/// stops.
async fn connection(
    mut stream: TcpStream,
    service: &Service,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut parser = CommandParser::new(limits);
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut output = BytesMut::with_capacity(16 << 10);
    loop {
        let read = tokio::select! {
            read = stream.read_buf(&mut input) => read?,
            _ = stop.wait_for(|stopping| *stopping) => return Ok(()),
        };
        if read == 0 {
            return Ok(());
        }
        loop {
            match parser.parse(&mut input) {
                Ok(Some(arguments)) if arguments.is_empty() => {}
                Ok(Some(arguments)) => {
                    service.execute(&arguments).await.encode(&mut output);
                    if arguments[0].eq_ignore_ascii_case(b"QUIT") {
                        stream.write_all(&output).await?;
                        return Ok(());
                    }
                    if output.len() >= OUTPUT_FLUSH_BYTES {
                        stream.write_all(&output).await?;
                        output.clear();
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    Reply::error(&error).encode(&mut output);
                    stream.write_all(&output).await?;
                    return Ok(());
                }
            }
        }
        if !output.is_empty() {
            stream.write_all(&output).await?;
            output.clear();
        }
    }
}
