//! Upstream connections owned by one client connection.
//!
//! The pooled client hands each request to a connection task of its own
//! and the answer and body back through channels: three task wake-ups per
//! request, often across threads. A client on HTTP/1.1 sends one request
//! at a time, so its connection instead keeps the upstream connections it
//! used parked in its [`ConnLocal`] and drives them from its own task: the
//! request goes out, and the answer and its body come back, without a hop.
//! The parked connection is checked before reuse (an upstream may have
//! closed it while idle; the request then goes, unsent, on a new one).
//! HTTP/2 clients (concurrent requests on one connection), HTTP/2
//! upstreams and active health checks use the pool.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::core::httpserve::ConnLocal;

/// The transport of an upstream connection: TCP, or TLS over it.
pub type Io = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Upstream connections one client connection keeps parked (a service and
/// its canary are two); past this the longest parked goes.
const PARKED_PER_CLIENT: usize = 4;

/// Owned connections one upstream may have open at once, busy or parked;
/// past this, requests use the pool.
pub const OWNED_PER_UPSTREAM: usize = 1024;

/// One open owned connection, counted against its upstream's bound. The
/// counter is also the upstream's identity: an owned connection holds it,
/// so no other upstream can be at its address while the connection lives.
pub struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A slot under `upstream`'s bound, if one is free.
    pub fn take(upstream: &Arc<AtomicUsize>) -> Option<Slot> {
        upstream
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < OWNED_PER_UPSTREAM).then_some(n + 1))
            .ok()
            .map(|_| Slot(upstream.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why an exchange on an owned connection failed.
pub enum Failure {
    /// The request never left: it may go again on another connection.
    Unsent(Box<Request<Full<Bytes>>>, String),
    Failed(String),
}

/// An upstream HTTP/1.1 connection, driven by whichever task uses it.
pub struct Owned {
    slot: Slot,
    sender: http1::SendRequest<Full<Bytes>>,
    driver: Driver,
}

/// The connection's I/O half, and whether it has ended.
struct Driver {
    conn: Pin<Box<http1::Connection<Io, Full<Bytes>>>>,
    ended: bool,
}

impl Driver {
    /// Moves the connection's I/O along; false once it has ended.
    fn drive(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended
            && let Poll::Ready(result) = self.conn.as_mut().poll(cx)
        {
            self.ended = true;
            if let Err(e) = result {
                tracing::debug!(error = %e, "owned upstream connection ended");
            }
        }
        !self.ended
    }
}

impl Owned {
    pub async fn open(io: Io, slot: Slot) -> Result<Owned, hyper::Error> {
        let (sender, conn) = http1::handshake(io).await?;
        Ok(Owned { slot, sender, driver: Driver { conn: Box::pin(conn), ended: false } })
    }

    /// Whether the connection can take a request (one the upstream closed
    /// while it was parked cannot).
    pub async fn ready(&mut self) -> bool {
        let Owned { sender, driver, .. } = self;
        poll_fn(|cx| match driver.drive(cx) {
            false => Poll::Ready(false),
            true => sender.poll_ready(cx).map(|r| r.is_ok()),
        })
        .await
    }

    /// Sends a request and waits for the answer's head, driving the
    /// connection meanwhile.
    pub async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<Response<Incoming>, Failure> {
        let Owned { sender, driver, .. } = self;
        let mut answer = std::pin::pin!(sender.try_send_request(req));
        let answered = poll_fn(|cx| {
            let open = driver.drive(cx);
            match answer.as_mut().poll(cx) {
                Poll::Pending if !open => Poll::Ready(None),
                polled => polled.map(Some),
            }
        })
        .await;
        match answered {
            Some(Ok(resp)) => Ok(resp),
            Some(Err(mut e)) => {
                let detail = super::upstream::error_chain(e.error());
                match e.take_message() {
                    Some(req) => Err(Failure::Unsent(Box::new(req), detail)),
                    None => Err(Failure::Failed(detail)),
                }
            }
            None => Err(Failure::Failed("the connection closed before the answer".into())),
        }
    }

    fn belongs_to(&self, upstream: &Arc<AtomicUsize>) -> bool {
        Arc::ptr_eq(&self.slot.0, upstream)
    }
}

/// The connections a client connection keeps between its requests.
#[derive(Default)]
struct Parked(Vec<Owned>);

/// The parked connection to `upstream`, if the client connection has one.
pub fn unpark(local: &ConnLocal, upstream: &Arc<AtomicUsize>) -> Option<Owned> {
    let mut parked = local.take::<Parked>()?;
    let found = parked.0.iter().position(|o| o.belongs_to(upstream)).map(|i| parked.0.swap_remove(i));
    local.put(parked);
    found
}

/// Parks a connection whose exchange is over for the client connection's
/// next request; one that has ended is dropped.
fn park(local: &ConnLocal, owned: Owned) {
    if owned.driver.ended {
        return;
    }
    let mut parked = local.take::<Parked>().unwrap_or_default();
    parked.0.retain(|o| !o.belongs_to(&owned.slot.0));
    if parked.0.len() >= PARKED_PER_CLIENT {
        parked.0.remove(0);
    }
    parked.0.push(owned);
    local.put(parked);
}

/// An upstream answer's body. On an owned connection, polling it drives
/// the connection, and once it is over the connection is parked again; a
/// body dropped part-way closes its connection (its framing is lost).
pub struct UpstreamBody {
    inner: Incoming,
    owned: Option<(Owned, ConnLocal)>,
}

impl UpstreamBody {
    pub fn pooled(inner: Incoming) -> UpstreamBody {
        UpstreamBody { inner, owned: None }
    }

    pub fn owned(inner: Incoming, owned: Owned, local: ConnLocal) -> UpstreamBody {
        UpstreamBody { inner, owned: Some((owned, local)) }
    }

    fn park(&mut self) {
        if let Some((owned, local)) = self.owned.take() {
            park(&local, owned);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        if let Some((owned, _)) = &mut this.owned {
            owned.driver.drive(cx);
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.park();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // A server stops polling a body that says it has ended, so a body
        // read to its end may be dropped without a last poll.
        if self.inner.is_end_stream() {
            self.park();
        }
    }
}
