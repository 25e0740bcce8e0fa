//! The gRPC listener: accepted connections, at most so many at once, each
//! with TCP keepalive and `TCP_NODELAY`.
//!
//! `Server::builder().tcp_keepalive(..)` and `.tcp_nodelay(..)` configure
//! only the listener tonic binds itself; `serve_with_incoming_shutdown`
//! takes the sockets as they are, so they are configured here.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use socket2::{SockRef, TcpKeepalive};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A connection that holds one of the listener's permits while open.
pub struct LimitedStream {
    stream: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl Connected for LimitedStream {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Idle time before the first keepalive probe on an accepted connection.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered probes after which the kernel drops the connection: a client
/// that vanished (no FIN, no RST) is noticed after about
/// `KEEPALIVE_IDLE + KEEPALIVE_RETRIES * KEEPALIVE_INTERVAL` (90 s), and its
/// connection, with its permit, released.
pub const KEEPALIVE_RETRIES: u32 = 3;

/// What every accepted connection gets: `TCP_NODELAY` (gRPC messages are
/// small and latency matters) and TCP keepalive.
pub fn configure_accepted(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    SockRef::from(stream).set_tcp_keepalive(&keepalive)
}

/// Accepts connections while fewer than `max` are open; the next waits
/// (in the kernel's backlog) until one closes.
pub fn incoming(
    listener: TcpListener,
    max: usize,
) -> impl Stream<Item = io::Result<LimitedStream>> + Send + 'static {
    let permits = Arc::new(Semaphore::new(max.max(1)));
    futures::stream::unfold((listener, permits), |(listener, permits)| async move {
        let permit = match permits.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return None,
        };
        let accepted = listener.accept().await.map(|(stream, _)| {
            if let Err(error) = configure_accepted(&stream) {
                tracing::warn!(%error, "cannot set TCP keepalive or TCP_NODELAY on a connection");
            }
            LimitedStream {
                stream,
                _permit: permit,
            }
        });
        Some((accepted, (listener, permits)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_keepalive_and_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = tokio::spawn(TcpStream::connect(addr));
        let mut incoming = std::pin::pin!(incoming(listener, 1));
        let accepted = futures::StreamExt::next(&mut incoming)
            .await
            .expect("a connection")
            .expect("accepted");
        let _client = client.await.expect("task").expect("connect");
        let socket = SockRef::from(&accepted.stream);
        assert!(socket.keepalive().expect("SO_KEEPALIVE"));
        assert_eq!(socket.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(
            socket.tcp_keepalive_interval().expect("interval"),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            socket.tcp_keepalive_retries().expect("retries"),
            KEEPALIVE_RETRIES
        );
        assert!(accepted.stream.nodelay().expect("TCP_NODELAY"));
    }
}
