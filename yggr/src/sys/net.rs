//! TCP, as `TcpTransport` uses it: tokio's sockets, or turmoil's simulated ones inside a
//! simulation (see the [parent module](super) for why the choice is made at run time).
//!
//! Only what the transport needs is here, with tokio's names and meanings. A simulated
//! listener binds only the unspecified address (`0.0.0.0:port`) or loopback, as turmoil
//! requires; peers are reached at their simulated hosts' addresses.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Runs `$body` with `$inner` bound to whichever socket `$value` (a `$kind`) holds.
macro_rules! dispatch {
    ($kind:ident, $value:expr, $inner:ident => $body:expr) => {
        match $value {
            $kind::Real($inner) => $body,
            #[cfg(feature = "simulation")]
            $kind::Simulated($inner) => $body,
        }
    };
}

/// A socket listening for connections.
pub(crate) enum TcpListener {
    Real(tokio::net::TcpListener),
    #[cfg(feature = "simulation")]
    Simulated(turmoil::net::TcpListener),
}

impl std::fmt::Debug for TcpListener {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TcpListener")
            .field("local_addr", &self.local_addr().ok())
            .finish()
    }
}

impl TcpListener {
    /// Binds `address`.
    pub(crate) async fn bind(address: SocketAddr) -> io::Result<TcpListener> {
        either!(
            turmoil::net::TcpListener::bind(address)
                .await
                .map(TcpListener::Simulated),
            tokio::net::TcpListener::bind(address)
                .await
                .map(TcpListener::Real)
        )
    }

    /// The next connection, and the address it comes from.
    pub(crate) async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        dispatch!(TcpListener, self, listener => {
            let (stream, from) = listener.accept().await?;
            Ok((TcpStream::from(stream), from))
        })
    }

    /// The address bound, with the port chosen if `0` was asked for.
    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        dispatch!(TcpListener, self, listener => listener.local_addr())
    }
}

/// One connection.
#[derive(Debug)]
pub(crate) enum TcpStream {
    Real(tokio::net::TcpStream),
    #[cfg(feature = "simulation")]
    Simulated(turmoil::net::TcpStream),
}

impl From<tokio::net::TcpStream> for TcpStream {
    fn from(stream: tokio::net::TcpStream) -> TcpStream {
        TcpStream::Real(stream)
    }
}

#[cfg(feature = "simulation")]
impl From<turmoil::net::TcpStream> for TcpStream {
    fn from(stream: turmoil::net::TcpStream) -> TcpStream {
        TcpStream::Simulated(stream)
    }
}

impl TcpStream {
    /// Connects to `address`.
    pub(crate) async fn connect(address: SocketAddr) -> io::Result<TcpStream> {
        either!(
            turmoil::net::TcpStream::connect(address)
                .await
                .map(TcpStream::Simulated),
            tokio::net::TcpStream::connect(address)
                .await
                .map(TcpStream::Real)
        )
    }

    /// Turns Nagle's algorithm off (a no-op on a simulated socket).
    pub(crate) fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        dispatch!(TcpStream, self, stream => stream.set_nodelay(nodelay))
    }

    /// Waits for bytes to arrive and copies some into `buffer` without taking them: the next
    /// read returns them again. `Ok(0)` when the peer closed the connection.
    pub(crate) async fn peek(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        dispatch!(TcpStream, self, stream => stream.peek(buffer).await)
    }

    /// What the socket says, without waiting, if the peer has closed or reset the connection
    /// or written on it, as [`ReadHalf::readable_now`] does for a half.
    pub(crate) fn readable_now(&mut self) -> Option<io::Result<usize>> {
        match self {
            TcpStream::Real(stream) => peek_now(stream),
            #[cfg(feature = "simulation")]
            TcpStream::Simulated(stream) => {
                let mut probe = [0u8; 1];
                let mut buffer = ReadBuf::new(&mut probe);
                let mut context = Context::from_waker(std::task::Waker::noop());
                match stream.poll_peek(&mut context, &mut buffer) {
                    Poll::Pending => None,
                    Poll::Ready(read) => Some(read),
                }
            }
        }
    }

    /// Splits the connection into a half to read and a half to write.
    pub(crate) fn into_split(self) -> (ReadHalf, WriteHalf) {
        match self {
            TcpStream::Real(stream) => {
                let (reader, writer) = stream.into_split();
                (ReadHalf::Real(reader), WriteHalf::Real(writer))
            }
            #[cfg(feature = "simulation")]
            TcpStream::Simulated(stream) => {
                let (reader, writer) = stream.into_split();
                (ReadHalf::Simulated(reader), WriteHalf::Simulated(writer))
            }
        }
    }
}

/// The reading half of a connection.
#[derive(Debug)]
pub(crate) enum ReadHalf {
    Real(tokio::net::tcp::OwnedReadHalf),
    #[cfg(feature = "simulation")]
    Simulated(turmoil::net::tcp::OwnedReadHalf),
}

impl ReadHalf {
    /// What the socket says, without waiting, if the peer has closed or reset the connection
    /// or written on it: `None` while nothing is there to read. A real socket is asked
    /// directly (the runtime learns of a close only once its reactor has run); a simulated
    /// one is polled once.
    pub(crate) fn readable_now(&mut self) -> Option<io::Result<usize>> {
        match self {
            ReadHalf::Real(reader) => peek_now(reader.as_ref()),
            #[cfg(feature = "simulation")]
            ReadHalf::Simulated(reader) => {
                let mut probe = [0u8; 1];
                let mut buffer = ReadBuf::new(&mut probe);
                let mut context = Context::from_waker(std::task::Waker::noop());
                match Pin::new(reader).poll_peek(&mut context, &mut buffer) {
                    Poll::Pending => None,
                    Poll::Ready(read) => Some(read),
                }
            }
        }
    }
}

/// Asks a real socket directly, without waiting, whether it has anything to read (or was
/// closed or reset); `None` while it has nothing.
fn peek_now(stream: &tokio::net::TcpStream) -> Option<io::Result<usize>> {
    let mut probe = [MaybeUninit::<u8>::uninit(); 1];
    match socket2::SockRef::from(stream).peek(&mut probe) {
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => None,
        read => Some(read),
    }
}

/// The writing half of a connection.
#[derive(Debug)]
pub(crate) enum WriteHalf {
    Real(tokio::net::tcp::OwnedWriteHalf),
    #[cfg(feature = "simulation")]
    Simulated(turmoil::net::tcp::OwnedWriteHalf),
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(TcpStream, self.get_mut(), stream => Pin::new(stream).poll_read(context, buffer))
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(TcpStream, self.get_mut(), stream => Pin::new(stream).poll_write(context, bytes))
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(TcpStream, self.get_mut(), stream => Pin::new(stream).poll_flush(context))
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(TcpStream, self.get_mut(), stream => Pin::new(stream).poll_shutdown(context))
    }
}

impl AsyncRead for ReadHalf {
    fn poll_read(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        dispatch!(ReadHalf, self.get_mut(), reader => Pin::new(reader).poll_read(context, buffer))
    }
}

impl AsyncWrite for WriteHalf {
    fn poll_write(
        self: Pin<&mut Self>,
        context: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<io::Result<usize>> {
        dispatch!(WriteHalf, self.get_mut(), writer => Pin::new(writer).poll_write(context, bytes))
    }

    fn poll_flush(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(WriteHalf, self.get_mut(), writer => Pin::new(writer).poll_flush(context))
    }

    fn poll_shutdown(self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        dispatch!(WriteHalf, self.get_mut(), writer => Pin::new(writer).poll_shutdown(context))
    }
}
