//! The HTTP stack every service runs behind, and the server loop with graceful shutdown.
//!
//! Outermost first: request id (taken from `X-Request-Id` or generated) → trace span carrying
//! that id → echo of the id → client address and problem+json for bodiless errors → timeout →
//! panic to 500 → body limit. Routes are timed by the metrics middleware.

use std::{
    future::Future,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use axum::{
    extract::{ConnectInfo, DefaultBodyLimit, Request},
    http::{header, HeaderName, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::TraceLayer,
};
use tracing::Span;

use crate::{
    config::HttpSettings,
    problem::{InternalErrorReport, Problem, CONTENT_TYPE},
};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The address of the client that sent the request: the peer, or the last `X-Forwarded-For`
/// hop when the service is configured to trust the proxy in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

#[derive(Clone, Copy)]
struct ForwardedPolicy {
    trust: bool,
}

/// The service's edge: records the client address for handlers, then rewrites responses that
/// leave the stack with an error status but no problem body (405 from the router, 408 from the
/// timeout) as problem+json, so clients only ever see one error shape.
async fn edge(
    axum::extract::State(policy): axum::extract::State<ForwardedPolicy>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(client) = client_addr(policy, &request) {
        request.extensions_mut().insert(client);
    }
    let response = next.run(request).await;
    let status = response.status();
    if status.as_u16() < 400 {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CONTENT_TYPE));
    if is_problem {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut rewritten = Problem::for_status(status).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            rewritten.headers_mut().append(name.clone(), value.clone());
        }
    }
    if let Some(report) = parts.extensions.get::<InternalErrorReport>() {
        rewritten.extensions_mut().insert(report.clone());
    }
    rewritten
}

fn client_addr(policy: ForwardedPolicy, request: &Request) -> Option<ClientAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    if !policy.trust {
        return peer.map(ClientAddr);
    }
    // Only the rightmost hop was written by the trusted proxy; anything left of it came from
    // the client. A rightmost hop that does not parse is ignored rather than skipped over.
    let rightmost = request
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect::<Vec<_>>()
        .last()
        .and_then(|hop| hop.trim().parse::<IpAddr>().ok());
    rightmost.or(peer).map(ClientAddr)
}

fn panic_problem(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    Problem::internal("handler panicked").into_response()
}

/// Wraps a service's full router in the standard stack.
pub fn with_standard_layers(router: Router, settings: &HttpSettings) -> Router {
    let access_log = settings.access_log;
    let trace = TraceLayer::new_for_http()
        .make_span_with(|request: &Request| {
            let id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or("-");
            tracing::info_span!("request", request_id = %id, method = %request.method(), path = %request.uri().path())
        })
        .on_request(())
        .on_response(move |response: &Response, latency: Duration, _span: &Span| {
            let status = response.status().as_u16();
            let latency_ms = latency.as_secs_f64() * 1000.0;
            // Unexpected failures are logged here, once, with their cause; client errors are
            // the client's business and only appear in the access log.
            if let Some(InternalErrorReport(cause)) = response.extensions().get::<InternalErrorReport>() {
                tracing::error!(status, latency_ms, error = %cause, "request failed");
            } else if access_log {
                tracing::info!(status, latency_ms, "request");
            }
        })
        .on_failure(());

    // One `layer` call for the whole stack: axum boxes each `Router::layer` separately, so
    // stacking them one by one would cost an allocation and a clone per layer per request.
    // Outermost first. The body limit is `DefaultBodyLimit`, which every body extractor
    // enforces while reading (also for chunked bodies), without changing the body type.
    let policy = ForwardedPolicy {
        trust: settings.trust_forwarded_for,
    };
    router
        .route_layer(middleware::from_fn(crate::metrics::track))
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(trace)
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(middleware::from_fn_with_state(policy, edge))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    settings.request_timeout,
                ))
                .layer(CatchPanicLayer::custom(panic_problem))
                .layer(DefaultBodyLimit::max(settings.body_limit_bytes)),
        )
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// Serves `router` until `shutdown` resolves, then stops accepting, lets in-flight requests
/// finish, and gives up on stragglers after `grace`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    grace: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stopping_tx, mut stopping_rx) = tokio::sync::watch::channel(false);
    let signal = async move {
        shutdown.await;
        tracing::info!("shutdown requested; draining in-flight requests");
        let _ = stopping_tx.send(true);
    };
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let deadline = async move {
        let _ = stopping_rx.wait_for(|stopping| *stopping).await;
        tokio::time::sleep(grace).await;
    };
    let upkeep = tokio::spawn(crate::metrics::upkeep());
    let result = tokio::select! {
        r = server => r,
        () = deadline => {
            tracing::warn!(grace_secs = grace.as_secs(), "requests still in flight after the grace period; stopping anyway");
            Ok(())
        }
    };
    upkeep.abort();
    result
}

/// Connects to Redis with bounded timeouts, retrying for up to `wait` so a service started
/// alongside Redis does not crash while it boots.
pub async fn connect_redis(
    client: redis::Client,
    wait: Duration,
) -> Result<redis::aio::ConnectionManager, redis::RedisError> {
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Duration::from_secs(2))
        .set_response_timeout(Duration::from_secs(2))
        .set_number_of_retries(2);
    let started = std::time::Instant::now();
    loop {
        match redis::aio::ConnectionManager::new_with_config(client.clone(), config.clone()).await {
            Ok(conn) => return Ok(conn),
            Err(e) if started.elapsed() >= wait => return Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "redis not reachable yet; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
