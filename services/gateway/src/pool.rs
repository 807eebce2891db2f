//! Idle upstream connections, one pool per serving thread and kind of connection (hyper's,
//! in `connections`; the lean exchanges', in `exchange`), and how a new one is dialled.
//!
//! Idle connections are reused newest first; the oldest are closed after `IDLE_TIMEOUT` by a
//! sweep, and at most `MAX_IDLE` are kept per upstream and thread.

use std::time::{Duration, Instant};

use http::uri::Authority;
use tokio::net::TcpStream;

/// Idle connections are closed after this long unused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
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

/// The `Host` header for `authority`, as a client would write it: without the default port.
pub(crate) fn host_of(authority: &Authority) -> &str {
    match authority.port_u16() {
        Some(80) => authority.host(),
        _ => authority.as_str(),
    }
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
