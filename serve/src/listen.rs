//! The accept loop of `taskledger serve`, with the limits that keep hostile connections from
//! taking the service down: how many connections are served at once, how long a request's head
//! may take to arrive (which also ends idle keep-alive connections and half-sent requests), and
//! how large it may be. `axum::serve` has none of them (no header read timeout at all), so the
//! loop is hyper-util's, with the same router.

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Connections served at once. Past it, new connections wait in the listen backlog until one
/// closes (never refused while the backlog has room). 16,384 fits under the 20,000 open files
/// of this machine's limit with room for the store's and the models' files; each idle
/// connection costs a few KiB, so the worst case is bounded to tens of MiB.
pub const CONNECTIONS_MAX: usize = 16_384;
/// A request's head (request line and headers) must arrive within this long after the
/// connection is ready for it: a half-sent request, or a keep-alive connection left idle, is
/// closed after it (slowloris).
pub const HEADER_READ_TIMEOUT_SECONDS: u64 = 10;
/// A request's head at most, in bytes: a larger one gets 431 and the connection is closed.
/// (HTTP/1 reads it into a buffer of this size; the service speaks HTTP/1 only, as axum's
/// default features do.)
pub const HEADER_BYTES_MAX: usize = 64 * 1024;
/// Headers in one request at most (HTTP/1).
pub const HEADERS_MAX: usize = 128;
/// A connection on which nothing has been read or written for this long is closed: hyper's
/// header read timeout starts only at a request's first byte, so a connection that never sends
/// one (or a keep-alive connection left idle) would otherwise be held for ever.
pub const CONNECTION_IDLE_SECONDS: u64 = 60;
/// On shutdown, in-flight requests get this long to finish before their connections are dropped.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 30;
/// After an accept error (out of file descriptors: EMFILE), wait this long before the next
/// accept instead of spinning.
pub const ACCEPT_ERROR_PAUSE_MILLIS: u64 = 50;

/// The accept loop's limits; `Default` is the constants above (tests shorten the times).
#[derive(Debug, Clone)]
pub struct ListenLimits {
    pub connections_max: usize,
    pub header_read_timeout: Duration,
    pub connection_idle: Duration,
    pub header_bytes_max: usize,
    pub headers_max: usize,
}

impl Default for ListenLimits {
    fn default() -> Self {
        ListenLimits {
            connections_max: CONNECTIONS_MAX,
            header_read_timeout: Duration::from_secs(HEADER_READ_TIMEOUT_SECONDS),
            connection_idle: Duration::from_secs(CONNECTION_IDLE_SECONDS),
            header_bytes_max: HEADER_BYTES_MAX,
            headers_max: HEADERS_MAX,
        }
    }
}

/// Serves `router` on `listener` with the default [`ListenLimits`] until `shutdown` completes,
/// then lets in-flight requests finish (at most [`SHUTDOWN_GRACE_SECONDS`]).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, router, shutdown, ListenLimits::default()).await
}

/// [`serve`] with the limits given.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()>,
    limits: ListenLimits,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.connections_max.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.header_bytes_max.max(8192))
        .max_headers(limits.headers_max);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MILLIS)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        // Each request knows its client's address (the sign-in rate limit counts per address).
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            router.clone(),
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        ));
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(IdleTimeout::new(stream, limits.connection_idle)),
                service,
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(
        Duration::from_secs(SHUTDOWN_GRACE_SECONDS),
        graceful.shutdown(),
    )
    .await
    .is_err()
    {
        tracing::warn!("in-flight requests still running after the grace period: dropped");
    }
    Ok(())
}

/// A connection that fails its reads with `TimedOut` once nothing has been read or written on it
/// for `idle` while a read waits: hyper then closes it.
struct IdleTimeout {
    stream: tokio::net::TcpStream,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleTimeout {
    fn new(stream: tokio::net::TcpStream, idle: Duration) -> IdleTimeout {
        IdleTimeout {
            stream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn progressed(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }
}

impl tokio::io::AsyncRead for IdleTimeout {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connection idle",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl tokio::io::AsyncWrite for IdleTimeout {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = std::pin::Pin::new(&mut this.stream).poll_write(cx, buf);
        if result.is_ready() {
            this.progressed();
        }
        result
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        let result = std::pin::Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        if result.is_ready() {
            this.progressed();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
