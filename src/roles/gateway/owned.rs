//! Upstream connections owned by one client connection.
//!
//! The pooled client hands each request to a connection task of its own
//! and the answer and body back through channels: three task wake-ups per
//! request, often across threads. A client on HTTP/1.1 sends one request
//! at a time, so its connection instead keeps the upstream connections it
//! used parked in its [`ConnLocal`] and drives them from its own task: the
//! request goes out and the answer and its body come back (core::h1codec)
//! without a hop. When the client connection closes, its parked
//! connections go to the upstream's idle list for the next client
//! connection, so clients that make one request per connection still reuse
//! upstream connections. A parked or idle connection is checked before
//! reuse (an upstream may have closed it; the request then goes on a new
//! one). HTTP/2 clients (concurrent requests on one connection), HTTP/2
//! upstreams and active health checks use the pool.

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use metrics::Gauge;
use tokio::io::AsyncWrite;

use super::proxy::BoxError;
use crate::core::h1codec::{self, BodyState, Decoded};
use crate::core::httpserve::ConnLocal;

/// The transport of an upstream connection: TCP, or TLS over it.
pub type Io = TokioIo<hyper_rustls::MaybeHttpsStream<TokioIo<tokio::net::TcpStream>>>;

/// How much room a read asks for.
const READ_CHUNK: usize = 16 * 1024;

/// Request bodies up to this size are written with the head, in one go.
const INLINE_BODY: usize = 16 * 1024;

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
    /// The upstream's URL, for the log.
    url: String,
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
    pub fn new(url: &str, open_gauge: Gauge) -> Shared {
        Shared { url: url.to_owned(), open: AtomicUsize::new(0), open_gauge, idle: Mutex::default() }
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
        if owned.reusable && !idle.closed && idle.conns.len() < IDLE_PER_UPSTREAM {
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
    /// The request did not leave whole: it may go again on another
    /// connection, whatever its method.
    Unsent(String),
    Failed(String),
}

/// An upstream HTTP/1.1 connection, driven by whichever task uses it.
pub struct Owned {
    slot: Slot,
    /// Boxed: a TLS stream is large, and an owned connection moves between
    /// the client connection's slot, the request and the answer's body.
    io: Box<Io>,
    /// Bytes read and not yet decoded.
    read: BytesMut,
    /// The request being written; kept for its room.
    write: Vec<u8>,
    /// Whether the connection can carry another request once the answer
    /// in hand is read: the upstream keeps it open, the framing was sound.
    reusable: bool,
}

impl Owned {
    pub fn open(io: Io, slot: Slot) -> Owned {
        Owned { slot, io: Box::new(io), read: BytesMut::new(), write: Vec::new(), reusable: true }
    }

    /// Whether the connection can take a request: in step, with nothing
    /// unasked for waiting, and not closed by the upstream while parked.
    pub async fn ready(&mut self) -> bool {
        if !self.reusable || !self.read.is_empty() {
            return false;
        }
        poll_fn(|cx| Poll::Ready(self.poll_fill(cx).is_pending())).await
    }

    /// Reads what the upstream sent into the buffer; 0 at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_CHUNK / 4 {
            self.read.reserve(READ_CHUNK);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut *self.io), cx, &mut self.read)
    }

    /// Sends a request and reads the answer's head; its body is left for
    /// [`UpstreamBody::owned`].
    pub async fn send(
        &mut self,
        method: &Method,
        target: &str,
        host: &HeaderValue,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<(Response<()>, BodyState), Failure> {
        self.write.clear();
        h1codec::encode_head(&mut self.write, method, target, host, headers, body.len());
        // A small body goes in the head's write; a large one after it, not
        // copied (nor kept: the buffer stays the size of a head).
        let rest = match body.len() <= INLINE_BODY {
            true => {
                self.write.extend_from_slice(body);
                &[][..]
            }
            false => body,
        };
        // A write that fails sent none of its bytes: the upstream never had
        // the whole request, so it cannot have acted on it.
        let unsent = |e: std::io::Error| Failure::Unsent(format!("writing the request: {e}"));
        for bytes in [&self.write[..], rest] {
            let mut sent = 0;
            while sent < bytes.len() {
                match poll_fn(|cx| Pin::new(&mut *self.io).poll_write(cx, &bytes[sent..])).await.map_err(unsent)? {
                    0 => return Err(Failure::Unsent("the connection took no more of the request".into())),
                    n => sent += n,
                }
            }
        }
        poll_fn(|cx| Pin::new(&mut *self.io).poll_flush(cx)).await.map_err(unsent)?;
        // Out of step until the answer is read.
        self.reusable = false;
        loop {
            match h1codec::decode_head(&mut self.read, method) {
                Ok(Some(head)) => {
                    self.reusable = head.keep_alive;
                    return Ok((head.response, head.body));
                }
                Ok(None) => {}
                Err(e) => return Err(Failure::Failed(e.to_string())),
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(0) => return Err(Failure::Failed("the upstream closed the connection before the answer".into())),
                Ok(_) => {}
                Err(e) => return Err(Failure::Failed(format!("reading the answer: {e}"))),
            }
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
/// next request; one that cannot carry another is dropped (closed).
fn park(local: &ConnLocal, owned: Owned) {
    if !owned.reusable {
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

/// An upstream answer's body: from the pool, or read from an owned
/// connection by the task that polls it. Once an owned connection's body is
/// read it is parked again; a body dropped part-way closes its connection
/// (the rest of the answer would be read as the next one's).
pub enum UpstreamBody {
    Pooled(Incoming),
    Owned(OwnedBody),
}

pub struct OwnedBody {
    /// None once the body is over (the connection parked) or failed.
    owned: Option<Owned>,
    state: BodyState,
    local: ConnLocal,
}

impl UpstreamBody {
    pub fn owned(state: BodyState, owned: Owned, local: ConnLocal) -> UpstreamBody {
        let mut body = OwnedBody { owned: Some(owned), state, local };
        if body.state.is_done() {
            body.finish();
        }
        UpstreamBody::Owned(body)
    }
}

impl OwnedBody {
    /// The body is read: the connection waits for the client's next request.
    fn finish(&mut self) {
        if let Some(owned) = self.owned.take() {
            park(&self.local, owned);
        }
    }

    /// The body cannot be read on: its connection closes, and so will the
    /// client's (its answer's head has gone).
    fn fail(&mut self, e: impl Into<BoxError>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let e = e.into();
        if let Some(owned) = self.owned.take() {
            tracing::warn!(upstream = %owned.slot.0.url, error = %e, "gateway upstream answer's body failed part-way");
        }
        Poll::Ready(Some(Err(e)))
    }

    fn poll_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(owned) = self.owned.as_mut() else { return Poll::Ready(None) };
            match self.state.decode(&mut owned.read) {
                Ok(Decoded::Data(data)) => {
                    if self.state.is_done() {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Decoded::End) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Ok(Decoded::More) => {}
                Err(e) => return self.fail(e),
            }
            match ready!(owned.poll_fill(cx)) {
                Ok(0) => {
                    owned.reusable = false;
                    if let Err(e) = self.state.eof() {
                        return self.fail(e);
                    }
                }
                Ok(_) => {}
                Err(e) => return self.fail(e),
            }
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Pooled(inner) => Pin::new(inner).poll_frame(cx).map_err(BoxError::from),
            UpstreamBody::Owned(body) => body.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Pooled(inner) => inner.is_end_stream(),
            UpstreamBody::Owned(body) => body.state.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Pooled(inner) => inner.size_hint(),
            UpstreamBody::Owned(body) => body.state.remaining().map_or_else(SizeHint::default, SizeHint::with_exact),
        }
    }
}

impl Drop for OwnedBody {
    fn drop(&mut self) {
        // A server stops polling a body that says it has ended, so a body
        // read to its end may be dropped without a last poll.
        if self.state.is_done() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An owned connection to a loopback listener (nothing is sent).
    async fn connection(shared: &Arc<Shared>, listener: &tokio::net::TcpListener) -> Owned {
        let tcp = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let io = TokioIo::new(hyper_rustls::MaybeHttpsStream::Http(TokioIo::new(tcp)));
        Owned::open(io, Slot::take(shared).unwrap())
    }

    #[tokio::test]
    async fn idle_connections_pass_between_clients_until_the_upstream_goes() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shared = Arc::new(Shared::new("http://test", Gauge::noop()));
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
        let elsewhere = Arc::new(Shared::new("http://test", Gauge::noop()));
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
