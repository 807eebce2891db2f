//! Keep-alive HTTP/1 connections to upstreams through hyper, one pool per serving thread,
//! for requests whose body is streamed and for upgrades (the rest go through `exchange`,
//! whose connections are pooled the same way, with [`Pool`]).
//!
//! Written here, over hyper's connection API, rather than using hyper-util's pooled client:
//! that client is shared between threads (a lock and a hashed key on every checkout) and
//! spawns a task for every response to put its connection back once the body has been read.
//! A serving thread owns its connections outright (see `config::Server::workers`), so here a
//! checkout is a pop from a thread-local list, a return is a push done by the response body
//! when it is dropped, and the connection's I/O runs on the thread that uses it.
//!
//! A connection goes back only after its response body was read to the end; one whose body
//! was abandoned, whose request was cancelled (a timeout) or that was upgraded is dropped, and
//! hyper closes it. Idle connections are reused newest first; the oldest are closed after
//! `IDLE_TIMEOUT` by a sweep, and at most `MAX_IDLE` are kept per upstream and thread.

use std::{
    cell::RefCell,
    time::{Duration, Instant},
};

use axum::body::Body;
use http::{uri::Authority, Request, Response};
use hyper::{
    body::Incoming,
    client::conn::{http1, TrySendError},
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

type Sender = http1::SendRequest<Body>;

/// Idle connections are closed after this long unused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream and serving thread.
const MAX_IDLE: usize = 512;
/// How many idle connections a checkout looks at for one ready to take a request.
const SCAN: usize = 8;

/// An idle connection and when it went idle.
struct Idle<C> {
    conn: C,
    since: Instant,
}

/// A serving thread's idle connections of one kind, per upstream authority (a route has few
/// upstreams, so a list beats a map). Shared by hyper's connections (here) and the lean
/// exchanges' (`exchange`).
pub(crate) struct Pool<C> {
    lists: Vec<(Authority, Vec<Idle<C>>)>,
}

impl<C> Pool<C> {
    pub(crate) const fn new() -> Self {
        Self { lists: Vec::new() }
    }

    /// Takes the newest idle connection to `authority` that `usable` accepts, dropping those
    /// it refuses with [`Usable::Closed`]; looks at `SCAN` connections at most.
    pub(crate) fn checkout(
        &mut self,
        authority: &Authority,
        mut usable: impl FnMut(&mut C) -> Usable,
    ) -> Option<C> {
        let list = &mut self.lists.iter_mut().find(|(a, _)| a == authority)?.1;
        let mut looked = 0;
        let mut i = list.len();
        while i > 0 && looked < SCAN {
            i -= 1;
            looked += 1;
            match usable(&mut list[i].conn) {
                Usable::Closed => {
                    list.remove(i);
                }
                Usable::Yes => return Some(list.remove(i).conn),
                Usable::Busy => {}
            }
        }
        None
    }

    /// Keeps `conn` as idle to `authority`; the oldest goes when `MAX_IDLE` are kept already.
    pub(crate) fn release(&mut self, authority: &Authority, conn: C, now: Instant) {
        let list = match self.lists.iter().position(|(a, _)| a == authority) {
            Some(i) => &mut self.lists[i].1,
            None => {
                self.lists.push((authority.clone(), Vec::new()));
                let last = self.lists.len() - 1;
                &mut self.lists[last].1
            }
        };
        if list.len() >= MAX_IDLE {
            // The oldest goes: the newest are the warmest.
            list.remove(0);
        }
        list.push(Idle { conn, since: now });
    }

    /// Closes connections idle for longer than `IDLE_TIMEOUT` and those `alive` refuses.
    pub(crate) fn sweep(&mut self, now: Instant, mut alive: impl FnMut(&mut C) -> bool) {
        for (_, list) in self.lists.iter_mut() {
            list.retain_mut(|c| now - c.since < IDLE_TIMEOUT && alive(&mut c.conn));
        }
        self.lists.retain(|(_, list)| !list.is_empty());
    }
}

/// Whether an idle connection can take a request now.
pub(crate) enum Usable {
    Yes,
    /// Not now (still finishing its last exchange); looked past.
    Busy,
    /// Closed, or otherwise never again; dropped.
    Closed,
}

thread_local! {
    static IDLE: RefCell<Pool<Sender>> = const { RefCell::new(Pool::new()) };
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {authority}: {reason}")]
    Connect { authority: String, reason: String },
    #[error(transparent)]
    Http(#[from] hyper::Error),
    #[error("upstream connection failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("upstream closed the connection before a complete response head")]
    ClosedEarly,
    #[error("upstream sent an invalid response: {0}")]
    Invalid(&'static str),
}

/// A connection lent to one exchange; back to the pool with [`Lease::release`] once the
/// response body has been read to the end.
pub struct Lease {
    sender: Sender,
}

impl Lease {
    /// Gives the connection back as an idle connection to `authority` (the one it was sent
    /// to; passed in rather than kept, so no reference count shared between threads is
    /// touched per request).
    pub fn release(self, authority: &Authority) {
        if self.sender.is_closed() {
            return;
        }
        let now = crate::coarse_timer::now();
        // `try_with`: a lease dropped while the thread's storage is being torn down just
        // closes its connection.
        let _ = IDLE.try_with(|idle| {
            if let Ok(mut idle) = idle.try_borrow_mut() {
                idle.release(authority, self.sender, now);
            }
        });
    }
}

/// Takes an idle connection to `authority` that can take a request now, dropping closed ones.
fn checkout(authority: &Authority) -> Option<Sender> {
    IDLE.try_with(|idle| {
        idle.try_borrow_mut().ok()?.checkout(authority, |sender| {
            if sender.is_closed() {
                Usable::Closed
            } else if sender.is_ready() {
                Usable::Yes
            } else {
                Usable::Busy
            }
        })
    })
    .ok()
    .flatten()
}

/// Closes the calling thread's connections idle for longer than `IDLE_TIMEOUT`, and those
/// the upstream closed.
pub fn sweep() {
    let now = Instant::now();
    let _ = IDLE.try_with(|idle| {
        if let Ok(mut idle) = idle.try_borrow_mut() {
            idle.sweep(now, |sender| !sender.is_closed());
        }
    });
    crate::exchange::sweep(now);
}

/// Sweeps the calling thread's pools every `IDLE_TIMEOUT / 2`; spawned once per serving
/// thread's runtime.
pub async fn sweep_forever() {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep();
    }
}

/// The `Host` header for `authority`, as a client would write it: without the default port.
pub(crate) fn host_of(authority: &Authority) -> &str {
    match authority.port_u16() {
        Some(80) => authority.host(),
        _ => authority.as_str(),
    }
}

/// Sends `request` (origin-form URI) to `authority` on an idle connection, or a new one
/// when none is ready. A request an idle connection could not take (it was closing) is
/// sent on the next, so a connection the upstream closed while idle costs no error.
pub async fn send(
    authority: &Authority,
    mut request: Request<Body>,
    connect_timeout: Duration,
) -> Result<(Response<Incoming>, Lease), SendError> {
    if !request.headers().contains_key(http::header::HOST) {
        if let Ok(host) = http::HeaderValue::from_str(host_of(authority)) {
            request.headers_mut().insert(http::header::HOST, host);
        }
    }
    while let Some(mut sender) = checkout(authority) {
        match sender.try_send_request(request).await {
            Ok(response) => return Ok((response, Lease { sender })),
            Err(e) => request = unsent(e)?,
        }
    }
    // Boxed: connecting is the rare path, and its future (a name lookup, a handshake) would
    // otherwise be copied around with every pooled request.
    let mut sender = Box::pin(connect(authority, connect_timeout)).await?;
    match sender.try_send_request(request).await {
        Ok(response) => Ok((response, Lease { sender })),
        Err(e) => Err(SendError::Http(e.into_error())),
    }
}

/// The request back when it was never written, so it can go on another connection.
fn unsent(mut e: TrySendError<Request<Body>>) -> Result<Request<Body>, SendError> {
    match e.take_message() {
        Some(request) => Ok(request),
        None => Err(SendError::Http(e.into_error())),
    }
}

async fn connect(authority: &Authority, timeout: Duration) -> Result<Sender, SendError> {
    let stream = dial(authority, timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(SendError::Http)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// A new TCP connection to `authority` (Nagle off), within `timeout`.
pub(crate) async fn dial(authority: &Authority, timeout: Duration) -> Result<TcpStream, SendError> {
    let failed = |reason: String| SendError::Connect {
        authority: authority.to_string(),
        reason,
    };
    let port = authority.port_u16().unwrap_or(80);
    // An IPv6 literal comes bracketed in an authority, never in a socket address.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let stream = tokio::time::timeout(timeout, TcpStream::connect((host, port)))
        .await
        .map_err(|_| failed(format!("no answer within {} ms", timeout.as_millis())))?
        .map_err(|e| failed(e.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
