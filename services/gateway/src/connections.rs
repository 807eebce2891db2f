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
//! hyper closes it.

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

use crate::pool::{dial, host_of, Pool, SendError, Usable};

type Sender = http1::SendRequest<Body>;

thread_local! {
    static IDLE: RefCell<Pool<Sender>> = const { RefCell::new(Pool::new()) };
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

/// Closes the calling thread's connections idle for longer than the pool keeps them, and
/// those the upstream closed.
pub fn sweep(now: Instant) {
    let _ = IDLE.try_with(|idle| {
        if let Ok(mut idle) = idle.try_borrow_mut() {
            idle.sweep(now, |sender| !sender.is_closed());
        }
    });
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
