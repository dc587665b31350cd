//! Upstream connections owned by one client connection.
//!
//! The pooled client hands each request to a connection task of its own
//! and the answer and body back through channels: three task wake-ups per
//! request, often across threads. A client on HTTP/1.1 sends one request
//! at a time, so its connection instead keeps the upstream connections it
//! used parked in its [`ConnLocal`] and drives them from its own task: the
//! request goes out, and the answer and its body come back, without a hop.
//! When the client connection closes, its parked connections go to the
//! upstream's idle list for the next client connection, so clients that
//! make one request per connection still reuse upstream connections. A
//! parked or idle connection is checked before reuse (an upstream may have
//! closed it; the request then goes, unsent, on a new one).
//! HTTP/2 clients (concurrent requests on one connection), HTTP/2
//! upstreams and active health checks use the pool.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use metrics::Gauge;

use crate::core::httpserve::ConnLocal;

/// The transport of an upstream connection: TCP, or TLS over it.
pub type Io = hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>;

/// Upstream connections one client connection keeps parked (a service and
/// its canary are two); past this the longest parked goes.
const PARKED_PER_CLIENT: usize = 4;

/// Owned connections one upstream may have open at once, busy, parked or
/// idle; past this, requests use the pool.
const OWNED_PER_UPSTREAM: usize = 1024;

/// Idle connections an upstream keeps for client connections to come, and
/// for how long.
const IDLE_PER_UPSTREAM: usize = 64;
const IDLE_FOR: Duration = Duration::from_secs(90);

/// What one upstream's owned connections share: how many are open, and the
/// idle ones closed client connections left. Its address is the upstream's
/// identity: an owned connection holds it, so no other upstream can be at
/// that address while the connection lives.
pub struct Shared {
    open: AtomicUsize,
    /// `open`, as `edgebox_gateway_upstream_owned_connections`.
    open_gauge: Gauge,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    conns: Vec<(Instant, Owned)>,
    /// The upstream is gone (a reload replaced it): nothing more is kept.
    closed: bool,
}

impl Shared {
    pub fn new(open_gauge: Gauge) -> Shared {
        Shared { open: AtomicUsize::new(0), open_gauge, idle: Mutex::default() }
    }

    /// The newest idle connection still within its time, if any.
    fn take_idle(&self) -> Option<Owned> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.conns.retain(|(since, _)| since.elapsed() < IDLE_FOR);
        idle.conns.pop().map(|(_, owned)| owned)
    }

    /// Keeps a connection a client connection no longer needs (and lets
    /// those idle too long go).
    fn give_back(&self, owned: Owned) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.conns.retain(|(since, _)| since.elapsed() < IDLE_FOR);
        if !owned.driver.ended && !idle.closed && idle.conns.len() < IDLE_PER_UPSTREAM {
            idle.conns.push((Instant::now(), owned));
        }
    }

    /// Closes the idle connections and keeps no more: the upstream is being
    /// dropped (the idle connections hold this, so it would not be).
    pub fn close(&self) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.closed = true;
        idle.conns.clear();
    }
}

/// One open owned connection, counted against its upstream's bound.
pub struct Slot(Arc<Shared>);

impl Slot {
    /// A slot under `upstream`'s bound, if one is free.
    pub fn take(upstream: &Arc<Shared>) -> Option<Slot> {
        upstream
            .open
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < OWNED_PER_UPSTREAM).then_some(n + 1))
            .ok()
            .map(|_| {
                upstream.open_gauge.increment(1.0);
                Slot(upstream.clone())
            })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        self.0.open_gauge.decrement(1.0);
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

    fn belongs_to(&self, upstream: &Arc<Shared>) -> bool {
        Arc::ptr_eq(&self.slot.0, upstream)
    }

    fn give_back(self) {
        let shared = self.slot.0.clone();
        shared.give_back(self);
    }
}

/// The connections a client connection keeps between its requests; they
/// go to their upstreams' idle lists when it closes.
#[derive(Default)]
struct Parked(Vec<Owned>);

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.drain(..).for_each(Owned::give_back);
    }
}

/// A connection to `upstream` for the client connection: its own parked
/// one, else an idle one another client connection left.
pub fn unpark(local: &ConnLocal, upstream: &Arc<Shared>) -> Option<Owned> {
    if let Some(mut parked) = local.take::<Parked>() {
        let found = parked.0.iter().position(|o| o.belongs_to(upstream)).map(|i| parked.0.swap_remove(i));
        local.put(parked);
        if found.is_some() {
            return found;
        }
    }
    upstream.take_idle()
}

/// Parks a connection whose exchange is over for the client connection's
/// next request; one that has ended is dropped.
fn park(local: &ConnLocal, owned: Owned) {
    if owned.driver.ended {
        return;
    }
    let mut parked = local.take::<Parked>().unwrap_or_default();
    if let Some(i) = parked.0.iter().position(|o| o.belongs_to(&owned.slot.0)) {
        parked.0.swap_remove(i).give_back();
    }
    if parked.0.len() >= PARKED_PER_CLIENT {
        parked.0.remove(0).give_back();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned connection to a loopback listener (nothing is sent).
    async fn connection(shared: &Arc<Shared>, listener: &tokio::net::TcpListener) -> Owned {
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let io = hyper_rustls::MaybeHttpsStream::Http(TokioIo::new(tcp));
        Owned::open(io, Slot::take(shared).unwrap()).await.unwrap()
    }

    #[tokio::test]
    async fn idle_connections_pass_between_clients_until_the_upstream_goes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(Shared::new(Gauge::noop()));
        let (client, other) = (ConnLocal::default(), ConnLocal::default());
        park(&client, connection(&shared, &listener).await);
        assert_eq!(shared.open.load(Ordering::Relaxed), 1);
        // Parked with its client connection: not for another one.
        assert!(unpark(&other, &shared).is_none());
        let owned = unpark(&client, &shared).expect("the client's own");
        park(&client, owned);
        // The client connection closes: the next one gets it.
        drop(client);
        let owned = unpark(&other, &shared).expect("left idle");
        assert!(unpark(&other, &shared).is_none());
        assert_eq!(shared.open.load(Ordering::Relaxed), 1);
        // Another upstream's connection is not this one's.
        let elsewhere = Arc::new(Shared::new(Gauge::noop()));
        park(&other, connection(&elsewhere, &listener).await);
        assert!(unpark(&other, &shared).is_none());
        // The upstream goes (a reload): idle connections close, none are kept.
        shared.give_back(owned);
        shared.close();
        assert_eq!(shared.open.load(Ordering::Relaxed), 0);
        shared.give_back(connection(&shared, &listener).await);
        assert!(shared.take_idle().is_none());
        assert_eq!(shared.open.load(Ordering::Relaxed), 0);
        // Past the bound, no slot.
        shared.open.store(OWNED_PER_UPSTREAM, Ordering::Relaxed);
        assert!(Slot::take(&shared).is_none());
    }
}
