//! The request path: route, authenticate, rate limit, pick an upstream, send with a deadline,
//! retry what is safe to retry, and answer every failure of the gateway's own as
//! problem+json. Upstream responses, errors included, pass through untouched.

use std::{
    future::Future as _,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use arc_swap::ArcSwap;
use axum::body::Body;
use bytes::Bytes;
use http::{header, uri::PathAndQuery, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt as _, Either, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::retry::budget::Budget as _;

use crate::{
    config::{Access, Server},
    connections, exchange, headers,
    keys::{AuthError, KeySet},
    metrics::RouteMetrics,
    pool,
    ratelimit::Limiter,
    refusal::Refusal,
    routes::{ActiveRoute, RouteTable},
    upstream::{self, Attempt, Outcome},
};

/// How long the rest of a refused request's body is read and dropped.
const LINGER: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads and drops what is left of a refused request's body, for `LINGER` at most, so a
/// client still sending it reads the answer instead of a reset connection (closing a socket
/// with unread data resets it, and the reset can overtake the answer): nginx's lingering
/// close. hyper keeps reading the connection while the body is alive.
fn discard(body: Incoming) {
    tokio::spawn(async move {
        let mut body = body;
        let _ = tokio::time::timeout(LINGER, async {
            while let Some(Ok(_)) = body.frame().await {}
        })
        .await;
    });
}

pub struct Gateway {
    pub table: ArcSwap<RouteTable>,
    pub client: upstream::Client,
    pub keys: Option<Arc<KeySet>>,
    pub limiter: Arc<Limiter>,
    pub server: Server,
    unrouted: RouteMetrics,
}

/// The gateway's span of one request, exported over OTLP: the span its `traceparent` names
/// upstream (none when the request was refused before one was made). Named by the route,
/// never the path, which may hold a token.
#[allow(clippy::too_many_arguments)]
fn export_span(
    sent: Option<&HeaderValue>,
    caller: Option<&HeaderValue>,
    method: &Method,
    route: &str,
    upstream: Option<&str>,
    status: u16,
    id: &HeaderValue,
    took: std::time::Duration,
) {
    use service_kit::telemetry::{export, Span};
    let Some(span) = sent
        .and_then(|t| t.to_str().ok())
        .and_then(|t| Span::of_sent(t, caller.and_then(|c| c.to_str().ok())))
    else {
        return;
    };
    if !span.sampled() {
        return;
    }
    let finished = export::Finished::ending_now(
        span,
        export::Kind::Server,
        format!("{method} {route}"),
        took,
    )
    .with(export::KeyValue::new("http.request.method", method))
    .with(export::KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ))
    .with(export::KeyValue::new("gravity.route", route.to_owned()))
    .with(export::KeyValue::new(
        "gravity.upstream",
        upstream.unwrap_or("-").to_owned(),
    ))
    .with(export::KeyValue::new(
        "gravity.request_id",
        id.to_str().unwrap_or("-").to_owned(),
    ));
    export::export(if status >= 500 {
        finished.failed(format!("status {status}"))
    } else {
        finished
    });
}

impl Gateway {
    pub fn new(
        table: RouteTable,
        server: Server,
        keys: Option<Arc<KeySet>>,
        limiter: Arc<Limiter>,
    ) -> Self {
        Self {
            table: ArcSwap::from_pointee(table),
            client: upstream::client(&server),
            keys,
            limiter,
            server,
            unrouted: RouteMetrics::new("-"),
        }
    }

    /// Serves one request; never fails (every failure is a response).
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let started = Instant::now();
        let id = headers::request_id(request.headers());
        let method = request.method().clone();
        let exporting = service_kit::telemetry::export::exporting();
        let path_for_log = self
            .server
            .access_log
            .then(|| request.uri().path().to_owned());
        // The caller's span, the parent of the gateway's own in the access log and its span.
        let caller_trace = (self.server.access_log || exporting)
            .then(|| request.headers().get(headers::TRACEPARENT).cloned())
            .flatten();
        if let Some(response) = self.own_path(&request) {
            let mut response = response.await;
            response.headers_mut().insert(headers::REQUEST_ID, id);
            return response;
        }
        let table = self.current_table();
        let path = request.uri().path();
        let found = table
            .find(host_of(&request), path)
            .map(|(route, rest)| (route, path.len() - rest.len()));
        // The traceparent sent upstream, kept for the access log only.
        let mut sent_trace = None;
        let (mut response, route_metrics, route_name, upstream) = match found {
            None => (Refusal::NoRoute.into_response(), &self.unrouted, "-", None),
            Some((route, rest_at)) => {
                // Boxed: the forwarding future is a few kilobytes, and the serving code moves
                // the request's future around before polling it; a box is one copy.
                let forwarding = self.forward(route, rest_at, request, peer, &id, &mut sent_trace);
                let (response, upstream) = Box::pin(forwarding).await;
                (
                    response,
                    &*route.metrics,
                    route.config.name.as_str(),
                    upstream.and_then(|i| route.pool.upstreams.get(i)),
                )
            }
        };
        let status = response.status().as_u16();
        let elapsed = started.elapsed().as_secs_f64();
        route_metrics.observe(&method, status, elapsed);
        if exporting {
            export_span(
                sent_trace.as_ref(),
                caller_trace.as_ref(),
                &method,
                route_name,
                upstream.map(|u| u.label.as_str()),
                status,
                &id,
                started.elapsed(),
            );
        }
        if let Some(path) = path_for_log {
            // `00-<trace id>-<span id>-<flags>`; none when the request was refused before a
            // traceparent was made.
            let sent = sent_trace.as_ref().and_then(|t| t.to_str().ok());
            let trace_id = sent.and_then(|t| t.split('-').nth(1));
            // The gateway's span is the parent id it sent; the caller's, when it continued
            // the caller's trace.
            let span_id = sent.and_then(|t| t.split('-').nth(2));
            let parent_span_id = caller_trace
                .as_ref()
                .and_then(|t| t.to_str().ok())
                .filter(|t| t.split('-').nth(1) == trace_id)
                .and_then(|t| t.split('-').nth(2));
            tracing::info!(
                request_id = id.to_str().unwrap_or("-"),
                trace_id,
                span_id,
                parent_span_id,
                method = %method,
                path,
                route = route_name,
                upstream = upstream.map_or("-", |u| u.label.as_str()),
                status,
                latency_ms = elapsed * 1000.0,
                "request"
            );
        }
        response.headers_mut().insert(headers::REQUEST_ID, id);
        response
    }

    /// The route table, as this thread's own copy of the current one: the copy's reference
    /// count is touched by this thread only, where the shared table's would be written by
    /// every thread on every request (a cross-core cache miss each time).
    fn current_table(&self) -> Arc<RouteTable> {
        thread_local! {
            /// (the shared table, this thread's copy of it)
            static TABLE: std::cell::RefCell<Option<(Arc<RouteTable>, Arc<RouteTable>)>> =
                const { std::cell::RefCell::new(None) };
        }
        let shared = self.table.load();
        TABLE.with(|cell| {
            let Ok(mut cell) = cell.try_borrow_mut() else {
                return Arc::clone(&shared);
            };
            match &*cell {
                // The held `Arc` keeps the shared table alive, so its address cannot be
                // reused by a newer one.
                Some((of, copy)) if Arc::ptr_eq(of, &shared) => Arc::clone(copy),
                _ => {
                    let copy = Arc::new(RouteTable::clone(&shared));
                    *cell = Some((Arc::clone(&shared), Arc::clone(&copy)));
                    copy
                }
            }
        })
    }

    /// The gateway's own health and metrics paths on the main listener, when configured
    /// (an orchestrator that can reach only the public port probes them).
    fn own_path(
        &self,
        request: &Request<Incoming>,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>>> {
        if request.method() != Method::GET {
            return None;
        }
        let path = request.uri().path();
        if self.server.health_path.as_deref() == Some(path) {
            let ready = self.keys.as_ref().is_none_or(|k| k.has_keys());
            return Some(Box::pin(async move { crate::probes::readiness(ready) }));
        }
        if self.server.metrics_path.as_deref() == Some(path) {
            return Some(Box::pin(async { crate::probes::metrics_page() }));
        }
        None
    }

    /// Sends a request on to its route; `rest_at` is where the path after the route's prefix
    /// starts. Returns the response and which of the route's upstreams answered it, if any.
    ///
    /// Stages: `admit` (target, identity headers, `authenticate`, rate limits), the body limit
    /// and `read_body`, then send with retries, then `relay`. A refusal at any stage is a
    /// `Refusal`. The stages borrow the request rather than take it: each async stage is a
    /// future of its own, and a request moved into one is copied (hundreds of bytes, per
    /// stage, per request).
    async fn forward(
        &self,
        route: &Arc<ActiveRoute>,
        rest_at: usize,
        mut request: Request<Incoming>,
        peer: SocketAddr,
        id: &HeaderValue,
        sent_trace: &mut Option<HeaderValue>,
    ) -> (Response<Body>, Option<usize>) {
        let admitted = match self.admit(route, rest_at, &mut request, peer).await {
            Ok(admitted) => admitted,
            Err(refusal) => return (refusal.into_response(), None),
        };
        // Body limit: a declared length is checked now, a streamed one while it is read.
        let limit = self.server.body_limit_bytes;
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            discard(request.into_body());
            return (Refusal::TooLarge { limit }.into_response(), None);
        }
        let mut upgrade = is_upgrade(&request).then(|| hyper::upgrade::on(&mut request));
        let (mut parts, incoming) = request.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
        let added = headers::Added::new(
            &parts.headers,
            admitted.client_ip,
            self.server.trust_forwarded_for,
            id.clone(),
            admitted.identity,
        );
        if self.server.access_log || service_kit::telemetry::export::exporting() {
            *sent_trace = Some(added.traceparent().clone());
        }
        let replayable = parts.method.is_idempotent() && upgrade.is_none();
        let mut body = match read_body(incoming, replayable, declared, limit).await {
            Ok(body) => body,
            Err(refusal) => return (refusal.into_response(), None),
        };
        let target = admitted.target;

        // Send, to one of the route's upstreams within the route's deadline, and again to
        // another when repeating it is harmless (RFC 9110 §9.2.2), its body can be sent again,
        // the answer was a 502, 503 or 504 or none came, and the route's retry budget allows.
        // (Inline rather than a stage of its own: a nested future's state is copied in and
        // out of this one, a measurable cost per request.)
        // From now: the time the client took to send its body, or a key refetch, is not the
        // upstream's to answer for.
        let sent_at = Instant::now();
        let deadline = tokio::time::Instant::from_std(sent_at) + route.config.timeout;
        let max_attempts = if parts.method.is_idempotent() && body.replayable() {
            1 + route.config.retries
        } else {
            1
        };
        route.budget.deposit();
        // The upstreams tried so far.
        let mut tried = [0usize; 1 + crate::config::MAX_RETRIES as usize];
        let mut attempts = 0;
        let mut last_upstream = None;
        loop {
            // The first attempt picks at the time just read; a retry reads the clock again.
            let now = if attempts == 0 {
                sent_at
            } else {
                Instant::now()
            };
            let (index, mut attempt) = match route.pool.pick(&tried[..attempts], now) {
                Ok(picked) => picked,
                Err(why) => return (Refusal::Unavailable(why).into_response(), last_upstream),
            };
            tried[attempts] = index;
            attempts += 1;
            let upstream = &route.pool.upstreams[index];
            last_upstream = Some(index);
            let counters = &route.upstream_metrics[index];
            let authority = &upstream.url.authority;
            let result = match body.in_memory() {
                // The common case: sent and answered in this task, nothing copied per attempt.
                Some(bytes) if upgrade.is_none() && bytes.len() <= exchange::BODY_LIMIT => {
                    let outgoing = exchange::Outgoing {
                        method: &parts.method,
                        target: &target,
                        headers: &parts.headers,
                        added: &added,
                        body: bytes,
                    };
                    let sent = exchange::send(authority, outgoing, self.server.connect_timeout);
                    tokio::time::timeout_at(deadline, sent)
                        .await
                        .map(|r| r.map(|response| (response.map(Either::Right), None)))
                }
                _ => {
                    let mut outgoing = Request::new(body.take());
                    *outgoing.method_mut() = parts.method.clone();
                    *outgoing.uri_mut() = Uri::from(target.clone());
                    *outgoing.headers_mut() = parts.headers.clone();
                    added.apply(outgoing.headers_mut());
                    // Boxed: the rarer path, whose future would otherwise enlarge (and make
                    // dearer to move) the future of every request.
                    let sent = Box::pin(connections::send(
                        authority,
                        outgoing,
                        self.server.connect_timeout,
                    ));
                    tokio::time::timeout_at(deadline, sent).await.map(|r| {
                        r.map(|(response, lease)| (response.map(Either::Left), Some(lease)))
                    })
                }
            };
            let can_retry = attempts < (max_attempts as usize).min(tried.len());
            match result {
                Ok(Ok((response, lease))) => {
                    let status = response.status();
                    counters.attempt(status.as_u16());
                    let outcome = if status.is_server_error() {
                        Outcome::ServerError
                    } else {
                        Outcome::Success
                    };
                    upstream.finish_now(&mut attempt, outcome);
                    let retriable = matches!(
                        status,
                        StatusCode::BAD_GATEWAY
                            | StatusCode::SERVICE_UNAVAILABLE
                            | StatusCode::GATEWAY_TIMEOUT
                    );
                    if retriable && can_retry && route.budget.withdraw() {
                        route.metrics.retried();
                        continue;
                    }
                    let upgrade = upgrade.take();
                    let relayed = relay(response, lease, attempt, upgrade, route.config.timeout);
                    return (relayed, last_upstream);
                }
                Ok(Err(e)) => {
                    if is_length_limit(&e) {
                        upstream.finish_now(&mut attempt, Outcome::Success);
                        let limit = self.server.body_limit_bytes;
                        return (Refusal::TooLarge { limit }.into_response(), last_upstream);
                    }
                    counters.attempt(0);
                    upstream.finish_now(&mut attempt, Outcome::ConnectionError);
                    if can_retry && route.budget.withdraw() {
                        route.metrics.retried();
                        continue;
                    }
                    tracing::warn!(upstream = %upstream.label, error = %error_chain(&e),
                        "upstream request failed");
                    return (Refusal::BadGateway.into_response(), last_upstream);
                }
                Err(_) => {
                    counters.attempt(0);
                    upstream.finish_now(&mut attempt, Outcome::ConnectionError);
                    let after = route.config.timeout;
                    return (
                        Refusal::GatewayTimeout { after }.into_response(),
                        last_upstream,
                    );
                }
            }
        }
    }

    /// The stages before the body: the request's target, identity headers the client sent
    /// removed, edge authentication and rate limits.
    async fn admit(
        &self,
        route: &ActiveRoute,
        rest_at: usize,
        request: &mut Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Admitted, Refusal> {
        let rest = request.uri().path().get(rest_at..).unwrap_or_default();
        let needs_token = match route.config.access {
            Access::Public => None,
            Access::Optional => Some(false),
            Access::Token => Some(!route.is_public_path(rest)),
        };
        let target = upstream_path(route, rest, request.uri()).ok_or(Refusal::BadTarget)?;
        let client_ip = client_addr(request, peer, self.server.trust_forwarded_for);
        // Clients rarely send any: one pass of comparisons instead of a hashed removal each.
        if request
            .headers()
            .keys()
            .any(|k| headers::IDENTITY.contains(k))
        {
            for name in headers::IDENTITY {
                request.headers_mut().remove(name);
            }
        }
        let caller = match needs_token {
            Some(required) => self.authenticate(required, request.headers()).await?,
            None => None,
        };
        if self.limiter.is_active() {
            self.limiter
                .check(client_ip, caller.as_ref().map(|c| c.0))
                .await
                .map_err(|refused| Refusal::RateLimited {
                    scope: refused.scope.as_str(),
                    retry_after: refused.retry_after,
                })?;
        }
        Ok(Admitted {
            target,
            client_ip,
            identity: caller.map(|c| c.1),
        })
    }

    /// Edge authentication: the caller of the request's bearer token and the identity
    /// headers to send upstream; `None` when there is no token and `required` is false (or
    /// the gateway checks no tokens).
    async fn authenticate(
        &self,
        required: bool,
        headers: &http::HeaderMap,
    ) -> Result<Option<(uuid::Uuid, headers::IdentityHeaders)>, Refusal> {
        let Some(keys) = &self.keys else {
            return Ok(None);
        };
        let token = match headers::bearer(headers) {
            Some(Ok(token)) => token,
            Some(Err(why)) => return Err(Refusal::Unauthenticated(why.into())),
            None if required => {
                return Err(Refusal::Unauthenticated(
                    "this route needs a bearer access token".into(),
                ))
            }
            None => return Ok(None),
        };
        match keys.verify(token).await {
            Ok(identity) => Ok(Some((
                identity.user,
                headers::IdentityHeaders {
                    plain: [
                        identity.user_header,
                        identity.roles_header,
                        identity.session_header,
                    ],
                    assertion: identity.assertion_header,
                },
            ))),
            Err(AuthError::KeysUnavailable) => Err(Refusal::KeysUnavailable),
            Err(AuthError::Token(e)) => Err(Refusal::Unauthenticated(e.to_string().into())),
        }
    }
}

/// What `admit` found out about a request it let through.
struct Admitted {
    /// The path and query to send upstream.
    target: PathAndQuery,
    client_ip: IpAddr,
    /// The verified caller's headers for the upstream, if there is one.
    identity: Option<headers::IdentityHeaders>,
}

/// The request body as it will be sent: held in memory when the request may be sent again
/// (`replayable`), else streamed once, within `limit` when no length was declared.
async fn read_body(
    incoming: Incoming,
    replayable: bool,
    declared: Option<u64>,
    limit: u64,
) -> Result<Replay, Refusal> {
    if http_body::Body::is_end_stream(&incoming) {
        return Ok(Replay::Empty);
    }
    if replayable {
        return match Limited::new(incoming, limit as usize).collect().await {
            Ok(collected) => Ok(Replay::Bytes(collected.to_bytes())),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                Err(Refusal::TooLarge { limit })
            }
            Err(_) => Err(Refusal::UnreadableBody),
        };
    }
    Ok(if declared.is_some() {
        Replay::Once(Some(Body::new(incoming)))
    } else {
        Replay::Once(Some(Body::new(Limited::new(incoming, limit as usize))))
    })
}

/// The upstream's response as the client gets it: hop-by-hop headers removed, and the body
/// tracked (see [`Tracked`]); a switch of protocols becomes a tunnel between the two
/// upgraded connections.
fn relay(
    mut response: Response<Upstream>,
    mut lease: Option<connections::Lease>,
    attempt: Attempt,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    idle_limit: std::time::Duration,
) -> Response<Body> {
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let (Some(client_side), Some(lease)) = (upgrade, lease.take()) {
            let upstream_side = hyper::upgrade::on(&mut response);
            tokio::spawn(tunnel(client_side, upstream_side, attempt, lease));
            let (mut parts, _) = response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers, true);
            return Response::from_parts(parts, Body::empty());
        }
    }
    let (mut parts, body) = response.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers, false);
    let body = Body::new(Tracked {
        inner: body,
        ended: false,
        lease,
        attempt,
        idle_limit,
        stall: None,
        progressed: false,
    });
    Response::from_parts(parts, body)
}

/// A request body that can be sent again for a retry, or only once.
enum Replay {
    Empty,
    Bytes(Bytes),
    Once(Option<Body>),
}

impl Replay {
    fn replayable(&self) -> bool {
        !matches!(self, Self::Once(_))
    }

    /// The body, when it is held in memory (empty included).
    fn in_memory(&self) -> Option<&Bytes> {
        static EMPTY: Bytes = Bytes::new();
        match self {
            Self::Empty => Some(&EMPTY),
            Self::Bytes(b) => Some(b),
            Self::Once(_) => None,
        }
    }

    fn take(&mut self) -> Body {
        match self {
            Self::Empty => Body::empty(),
            Self::Bytes(b) => Body::from(b.clone()),
            Self::Once(b) => b.take().unwrap_or_else(Body::empty),
        }
    }
}

fn is_upgrade(request: &Request<Incoming>) -> bool {
    let h = request.headers();
    h.contains_key(header::UPGRADE)
        && h.get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The request's host, without port, from the URI (HTTP/2, absolute form) or `Host`.
fn host_of(request: &Request<Incoming>) -> Option<&str> {
    let raw = match request.uri().host() {
        Some(h) => h,
        None => request.headers().get(header::HOST)?.to_str().ok()?,
    };
    let host = if raw.starts_with('[') {
        raw.find(']').map_or(raw, |end| &raw[..=end])
    } else {
        raw.split_once(':').map_or(raw, |(h, _)| h)
    };
    Some(host)
}

/// The path and query to send upstream: the request's own, or what follows the route's
/// prefix when the route strips it. `None` when that does not make a valid request target.
fn upstream_path(route: &ActiveRoute, rest: &str, uri: &Uri) -> Option<PathAndQuery> {
    if !route.config.strip_prefix {
        return Some(
            uri.path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
    }
    let path = if rest.is_empty() { "/" } else { rest };
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    PathAndQuery::from_maybe_shared(Bytes::from(target)).ok()
}

fn client_addr(request: &Request<Incoming>, peer: SocketAddr, trust_forwarded_for: bool) -> IpAddr {
    let forwarded = trust_forwarded_for
        .then(|| service_kit::http::forwarded_client(request.headers()))
        .flatten();
    forwarded.unwrap_or(peer.ip())
}

fn is_length_limit(e: &pool::SendError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Splices a WebSocket (or any upgraded) connection between client and upstream.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    attempt: Attempt,
    lease: connections::Lease,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade did not complete");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
    drop(attempt);
    drop(lease);
}

/// An upstream response body: from hyper's client connection (`connections`, whose
/// connection goes back through the lease) or from a lean exchange (which gives its
/// connection back itself).
type Upstream = Either<Incoming, exchange::Reply>;

/// An upstream response body that keeps its attempt (and so the upstream's in-flight
/// count) alive until it has been sent or dropped, and gives a hyper connection back to the
/// serving thread's pool when it was read to the end.
///
/// An upstream that stops sending in the middle of a body, without closing, would otherwise
/// hold the client forever: a wait for the next part longer than the route's `timeout` ends
/// the body in an error, so the client's connection is cut (its status is already sent).
/// The timer exists only once a body has had to wait; a body already in memory never does.
struct Tracked {
    inner: Upstream,
    ended: bool,
    lease: Option<connections::Lease>,
    attempt: Attempt,
    idle_limit: std::time::Duration,
    stall: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A part arrived since the timer was last set.
    progressed: bool,
}

/// The upstream sent nothing more of a body for longer than the route's timeout.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no more of the response body for {0:?}")]
struct Stalled(std::time::Duration);

impl http_body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => {
                let limit = this.idle_limit;
                let stall = match &mut this.stall {
                    Some(stall) => {
                        if std::mem::take(&mut this.progressed) {
                            stall.as_mut().reset(tokio::time::Instant::now() + limit);
                        }
                        stall
                    }
                    None => this.stall.insert(Box::pin(tokio::time::sleep(limit))),
                };
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                tracing::warn!(upstream = %this.attempt.upstream().label,
                    "upstream stalled in the middle of a response body; cutting the response");
                Poll::Ready(Some(Err(Box::new(Stalled(limit)))))
            }
            Poll::Ready(None) => {
                this.ended = true;
                Poll::Ready(None)
            }
            ready => {
                this.progressed = true;
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.ended || http_body::Body::is_end_stream(&self.inner) {
            if let Some(lease) = self.lease.take() {
                lease.release(&self.attempt.upstream().url.authority);
            }
        }
    }
}
