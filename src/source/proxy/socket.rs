//! One side of a proxied connection as the forwarding loop sees it: plain
//! TCP, or TLS over TCP ([`Socket`]), split into a reading and a writing
//! half that the two directions use at once, with the TCP socket under it
//! at hand for what only TCP can do (no delay, a reset by `SO_LINGER` 0).
//! Owns no policy: what to connect, accept or verify is [`super::tls`]'s
//! and [`super::forward`]'s.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::tcp;
use tokio::net::TcpStream;

type Tls = tokio_rustls::TlsStream<TcpStream>;

/// A connected socket, plain or TLS.
pub enum Socket {
    Plain(TcpStream),
    Tls(Box<Tls>),
}

impl Socket {
    /// The TCP socket (under TLS when there is TLS).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(s) => s,
            Socket::Tls(t) => t.get_ref().0,
        }
    }

    /// Both halves, borrowed: plain TCP splits without a lock; TLS shares
    /// one session between them (tokio's split, locked per poll).
    pub fn halves(&mut self) -> (ReadHalf<'_>, WriteHalf<'_>) {
        match self {
            Socket::Plain(s) => {
                let (r, w) = s.split();
                (ReadHalf::Plain(r), WriteHalf::Plain(w))
            }
            Socket::Tls(t) => {
                let (r, w) = tokio::io::split(&mut **t);
                (ReadHalf::Tls(r), WriteHalf::Tls(w))
            }
        }
    }
}

/// Bytes written to TCP socket `fd` that its peer has not acknowledged yet
/// (`TIOCOUTQ`: unsent, or sent and in flight); None where the kernel does
/// not tell (or `fd` is not an open socket). A reset with zero linger
/// discards them.
pub fn unacknowledged(fd: std::os::fd::RawFd) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let mut n: libc::c_int = 0;
        // SAFETY: TIOCOUTQ writes one int through the pointer; on a
        // descriptor that is not an open socket the call fails, nothing else.
        let r = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut n) };
        (r == 0).then(|| usize::try_from(n).unwrap_or(0))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = fd;
        None
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for Socket {
    fn from(s: tokio_rustls::client::TlsStream<TcpStream>) -> Socket {
        Socket::Tls(Box::new(Tls::Client(s)))
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for Socket {
    fn from(s: tokio_rustls::server::TlsStream<TcpStream>) -> Socket {
        Socket::Tls(Box::new(Tls::Server(s)))
    }
}

/// The reading half of a [`Socket`]: plaintext out.
pub enum ReadHalf<'a> {
    Plain(tcp::ReadHalf<'a>),
    Tls(tokio::io::ReadHalf<&'a mut Tls>),
}

/// The writing half of a [`Socket`]: plaintext in. Bytes written to TLS may
/// wait in the session until a flush; the forwarding loop flushes after
/// every write.
pub enum WriteHalf<'a> {
    Plain(tcp::WriteHalf<'a>),
    Tls(tokio::io::WriteHalf<&'a mut Tls>),
}

impl AsyncRead for ReadHalf<'_> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadHalf::Plain(r) => Pin::new(r).poll_read(cx, buf),
            ReadHalf::Tls(r) => Pin::new(r).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_write(cx, buf),
            WriteHalf::Tls(w) => Pin::new(w).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_flush(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_flush(cx),
        }
    }

    /// TLS: close_notify, then the TCP write shutdown (FIN).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteHalf::Plain(w) => Pin::new(w).poll_shutdown(cx),
            WriteHalf::Tls(w) => Pin::new(w).poll_shutdown(cx),
        }
    }
}
