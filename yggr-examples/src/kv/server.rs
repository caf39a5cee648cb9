//! The client listener: one task per connection, bounded by a semaphore. A connection reads
//! into a buffer, takes every whole command off it, runs them in order (a pipelined client
//! gets its replies in order) and writes all their replies with one write.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

use super::commands::Service;
use super::resp::{Limits, Reply, parse_command};

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

/// Serves clients on `listener` until `stop` turns true. Connections already open are told
/// `-ERR shutting down` for every later command once the node stops.
pub async fn serve(
    listener: TcpListener,
    service: Service,
    options: ServerOptions,
    mut stop: watch::Receiver<bool>,
) {
    let permits = Arc::new(Semaphore::new(options.max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stopping| *stopping) => return,
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
        tokio::spawn(async move {
            if let Err(error) = connection(stream, &service, &limits).await {
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

/// Serves one client until it disconnects, sends `QUIT`, or breaks the framing.
async fn connection(
    mut stream: TcpStream,
    service: &Service,
    limits: &Limits,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut input = BytesMut::with_capacity(16 << 10);
    let mut output = BytesMut::with_capacity(16 << 10);
    loop {
        if stream.read_buf(&mut input).await? == 0 {
            return Ok(());
        }
        let mut quit = false;
        loop {
            match parse_command(&mut input, limits) {
                Ok(Some(arguments)) if arguments.is_empty() => {}
                Ok(Some(arguments)) => {
                    service.execute(&arguments).await.encode(&mut output);
                    if arguments[0].eq_ignore_ascii_case(b"QUIT") {
                        quit = true;
                        break;
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
        stream.write_all(&output).await?;
        output.clear();
        if quit {
            return Ok(());
        }
    }
}
