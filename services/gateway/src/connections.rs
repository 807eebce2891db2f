//! Keep-alive HTTP/1 connections to upstreams, one pool per serving thread.
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

struct Idle {
    sender: Sender,
    since: Instant,
}

thread_local! {
    /// Per upstream authority (a route has few upstreams, so a list beats a map).
    static IDLE: RefCell<Vec<(Authority, Vec<Idle>)>> = const { RefCell::new(Vec::new()) };
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot connect to {authority}: {reason}")]
    Connect { authority: String, reason: String },
    #[error(transparent)]
    Http(#[from] hyper::Error),
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
        let sender = self.sender;
        let now = Instant::now();
        // `try_with`: a lease dropped while the thread's storage is being torn down just
        // closes its connection.
        let _ = IDLE.try_with(|idle| {
            let Ok(mut idle) = idle.try_borrow_mut() else {
                return;
            };
            let list = match idle.iter().position(|(a, _)| a == authority) {
                Some(i) => &mut idle[i].1,
                None => {
                    idle.push((authority.clone(), Vec::new()));
                    let last = idle.len() - 1;
                    &mut idle[last].1
                }
            };
            if list.len() >= MAX_IDLE {
                // The oldest goes: the newest are the warmest.
                list.remove(0);
            }
            list.push(Idle { sender, since: now });
        });
    }
}

/// Takes an idle connection to `authority` that can take a request now, dropping closed ones.
fn checkout(authority: &Authority) -> Option<Sender> {
    IDLE.try_with(|idle| {
        let mut idle = idle.try_borrow_mut().ok()?;
        let list = &mut idle.iter_mut().find(|(a, _)| a == authority)?.1;
        let mut looked = 0;
        let mut i = list.len();
        while i > 0 && looked < SCAN {
            i -= 1;
            looked += 1;
            if list[i].sender.is_closed() {
                list.remove(i);
            } else if list[i].sender.is_ready() {
                return Some(list.remove(i).sender);
            }
        }
        None
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
            for (_, list) in idle.iter_mut() {
                list.retain(|c| !c.sender.is_closed() && now - c.since < IDLE_TIMEOUT);
            }
            idle.retain(|(_, list)| !list.is_empty());
        }
    });
}

/// Sweeps the calling thread's pool every `IDLE_TIMEOUT / 2`; spawned once per serving
/// thread's runtime.
pub async fn sweep_forever() {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 2);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        sweep();
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
        // As a client would write it: without the default port.
        let host = match authority.port_u16() {
            Some(80) => authority.host(),
            _ => authority.as_str(),
        };
        if let Ok(host) = http::HeaderValue::from_str(host) {
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
