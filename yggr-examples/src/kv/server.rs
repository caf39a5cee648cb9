//! The client listener: one task per connection, bounded by a semaphore. A connection reads
//! into a buffer, takes every whole command off it, runs them in order (a pipelined client
//! gets its replies in order) and writes all their replies with one write. A connection that
//! turns out to carry HTTP is closed, as Redis does (see [`is_http_request`]).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
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
    let http_warning = Arc::new(HttpWarning::default());
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
                tokio::time::sleep(Duration::from_millis(50)).await;
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
        let http_warning = Arc::clone(&http_warning);
        connections.spawn(async move {
            let client = Client {
                peer,
                http_warning: &http_warning,
            };
            if let Err(error) = connection(stream, client, &service, limits, stop).await {
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

/// HTTP methods, which start an HTTP request line.
const HTTP_METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"CONNECT", b"OPTIONS", b"TRACE", b"PATCH",
];

/// Whether a command is in fact a line of an HTTP request: a command named `POST` or `Host:`
/// (the two Redis closes a connection on), or a request line, `<method> <target> HTTP/<n>`.
/// None of them is a command here (a `GET` takes one argument). A web page can make a browser
/// send a request to this port (cross-protocol scripting); read as inline commands, the lines
/// of its body would run one by one, so the connection is closed at its first line instead.
pub fn is_http_request(arguments: &[Bytes]) -> bool {
    let Some(name) = arguments.first() else {
        return false;
    };
    if name.eq_ignore_ascii_case(b"POST") || name.eq_ignore_ascii_case(b"Host:") {
        return true;
    }
    matches!(
        arguments,
        [method, _, version]
            if HTTP_METHODS.iter().any(|known| method.eq_ignore_ascii_case(known))
                && version.starts_with(b"HTTP/")
    )
}

/// Logs the closing of an HTTP connection at most once per [`HTTP_WARNING_INTERVAL`], as Redis
/// does: a flood of such connections must not become a flood of log lines.
#[derive(Debug, Default)]
struct HttpWarning {
    last_logged: Mutex<Option<Instant>>,
}

const HTTP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

impl HttpWarning {
    fn closing(&self, peer: SocketAddr) {
        let mut last_logged = self
            .last_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if last_logged.is_some_and(|at| now.duration_since(at) < HTTP_WARNING_INTERVAL) {
            return;
        }
        *last_logged = Some(now);
        warn!(
            target: "kv",
            %peer,
            "closed a client connection that sent an HTTP request (POST, Host: or a request \
             line): a browser or a proxy may be sending to this port (logged once a minute at most)"
        );
    }
}

/// Who is on the other end of a connection, for its log lines.
struct Client<'a> {
    peer: SocketAddr,
    http_warning: &'a HttpWarning,
}

/// Serves one client until it disconnects, sends `QUIT`, breaks the framing, turns out to
/// speak HTTP, or the server stops.
async fn connection(
    mut stream: TcpStream,
    client: Client<'_>,
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
                Ok(Some(arguments)) if is_http_request(&arguments) => {
                    // What came before it was answered; nothing after it runs.
                    stream.write_all(&output).await?;
                    client.http_warning.closing(client.peer);
                    return Ok(());
                }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::commands::tests::lone_service;

    /// A server for a one-node service on a loopback port; it stops when the sender drops.
    async fn serving() -> (SocketAddr, watch::Sender<bool>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = watch::channel(false);
        let service = lone_service().await;
        tokio::spawn(serve(listener, service, ServerOptions::default(), stopped));
        (address, stop)
    }

    /// Everything the server sends after `request` until it closes the connection. The
    /// client keeps its side open: only the server can end the read.
    async fn answer_until_closed(address: SocketAddr, request: &[u8]) -> Vec<u8> {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer));
        match read.await {
            Ok(result) => result.map(|_| answer).unwrap(),
            Err(_) => panic!(
                "{:?} left open, having answered {:?}",
                String::from_utf8_lossy(request),
                String::from_utf8_lossy(&answer)
            ),
        }
    }

    #[tokio::test]
    async fn a_connection_that_sends_an_http_request_is_closed_unanswered() {
        let (address, _stop) = serving().await;
        for request in [
            &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..],
            b"POST /keys HTTP/1.1\r\nContent-Length: 9\r\n\r\nSET a 1\r\n",
            b"host: localhost\r\n",
            b"*1\r\n$4\r\nPOST\r\n",
        ] {
            assert_eq!(
                answer_until_closed(address, request).await,
                b"",
                "{request:?}"
            );
        }
        // What came before the request is answered; nothing after it runs.
        let answer = answer_until_closed(address, b"PING\r\nPOST / HTTP/1.0\r\nPING\r\n").await;
        assert_eq!(answer, b"+PONG\r\n");
    }

    #[test]
    fn only_http_lines_are_taken_for_http() {
        let command = |words: &[&str]| -> Vec<Bytes> {
            words
                .iter()
                .map(|word| Bytes::copy_from_slice(word.as_bytes()))
                .collect()
        };
        for http in [
            &["GET", "/", "HTTP/1.1"][..],
            &["options", "*", "HTTP/1.0"],
            &["POST"],
            &["post", "/x"],
            &["HOST:", "example.com"],
        ] {
            assert!(is_http_request(&command(http)), "{http:?}");
        }
        for not_http in [
            &["GET", "HTTP/1.1"][..],
            &["SET", "/", "HTTP/1.1"],
            &["GET", "/", "HTTP-ish"],
            &["Host", "x"],
            &[],
        ] {
            assert!(!is_http_request(&command(not_http)), "{not_http:?}");
        }
    }
}
