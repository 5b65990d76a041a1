//! The accept loop under the router: one hyper HTTP/1 connection per accepted socket, a cap on
//! open connections, idle and header-read timeouts, and graceful shutdown. TLS wraps the
//! accepted stream here, and HTTP/2 swaps the connection builder.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Sleep;

/// What the accept loop bounds.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a complete request head on a connection that has no request: from
    /// when it opens or ends its previous response. hyper's timer, so it never runs while a
    /// response (a stream included) is being produced.
    pub idle_timeout: Duration,
    /// Longest time from the first byte of a request head to its end.
    pub header_read_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
}

/// Sent, unread request and all, to a connection over the cap: a quick and explicit refusal
/// that a client or load balancer can retry elsewhere, rather than a socket left waiting.
const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\n\
content-type: application/json\r\ncontent-length: 65\r\nconnection: close\r\n\r\n\
{\"error\":\"too_many_connections\",\"message\":\"too many connections\"}";

/// How long to pause after a failed `accept` (typically out of file descriptors), so the
/// loop does not spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets each
/// connection finish its request in flight, and returns once every connection has ended.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle_timeout);
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refuse(&stream);
            continue;
        };
        let requests = Arc::new(Requests::default());
        let stream = HeadDeadline {
            stream,
            requests: requests.clone(),
            timeout: limits.header_read_timeout,
            seen: 0,
            deadline: None,
        };
        let router = TowerToHyperService::new(router.clone());
        let service = hyper::service::service_fn(move |request| {
            let handling = Handling::enter(&requests);
            let response = router.call(request);
            async move {
                let response = response.await;
                drop(handling);
                response
            }
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = async { stop.wait_for(|stop| *stop).await.map(|_| ()) } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                // Timeouts and clients that go away: routine, and nothing to act on.
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    // Each connection holds a permit until it ends: all of them back means all have ended.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = permits.acquire_many(all).await;
    Ok(())
}

/// Answers 503 without reading, then closes. `try_write` never waits: a fresh socket's send
/// buffer holds the few bytes, and a peer that cannot take them gets nothing.
fn refuse(stream: &TcpStream) {
    // Not a warning per socket: a flood would turn into a flood of log lines.
    tracing::debug!("connection refused: `limits.max_connections` are open");
    let _ = stream.try_write(OVER_CAPACITY);
}

/// A connection's requests, as its service sees them: how many began, how many are running.
#[derive(Default)]
struct Requests {
    started: AtomicU64,
    running: AtomicUsize,
}

/// Marks a request as running until dropped (when its handler has answered or was dropped).
struct Handling(Arc<Requests>);

impl Handling {
    fn enter(requests: &Arc<Requests>) -> Self {
        requests.started.fetch_add(1, Ordering::AcqRel);
        requests.running.fetch_add(1, Ordering::AcqRel);
        Self(requests.clone())
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The accepted stream, failing its reads once a request head has taken longer than the
/// header-read timeout since its first byte. hyper's own timer cannot tell the idle wait
/// from a slow head; this one starts only when bytes arrive with no request running, and
/// stops when the head is complete (the service is called).
struct HeadDeadline {
    stream: TcpStream,
    requests: Arc<Requests>,
    timeout: Duration,
    /// `requests.started` when the deadline was last cleared.
    seen: u64,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let started = this.requests.started.load(Ordering::Acquire);
        let running = this.requests.running.load(Ordering::Acquire) > 0;
        if started != this.seen || running {
            // A head was completed since, or a body is being read: no head is pending.
            this.seen = started;
            this.deadline = None;
        }
        let filled = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > filled && !running && this.deadline.is_none() {
                    this.deadline = Some(Box::pin(tokio::time::sleep(this.timeout)));
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    let late = "request head not received in time";
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, late)));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for HeadDeadline {
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
