//! Every answer the gateway gives itself rather than passing on an upstream's: one type, each
//! case rendered as problem+json with a stable `type` (`urn:gravity:problem:<slug>`). The
//! request path's stages return a `Refusal`; only `Refusal::into_response` knows the wire
//! format.

use std::{borrow::Cow, time::Duration};

use axum::{body::Body, response::IntoResponse as _};
use http::{header, HeaderValue, Response, StatusCode};
use service_kit::Problem;

use crate::upstream::Unavailable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No route matches the request (404 `no-route`).
    NoRoute,
    /// The path after the route's prefix is not a valid request target (400).
    BadTarget,
    /// No bearer token where the route needs one, or one that does not verify; says why
    /// (401 `unauthenticated`).
    Unauthenticated(Cow<'static, str>),
    /// The auth service's keys have not been loaded yet (503 `keys-unavailable`).
    KeysUnavailable,
    /// A rate limit is used up (429 `rate-limited`); `scope` names which.
    RateLimited {
        scope: &'static str,
        retry_after: Duration,
    },
    /// The request body is larger than the gateway accepts (413).
    TooLarge { limit: u64 },
    /// The request body could not be read from the client (400).
    UnreadableBody,
    /// No upstream may take the request: breaker open or none healthy (503).
    Unavailable(Unavailable),
    /// The upstream failed to answer: refused, reset or closed early (502 `bad-gateway`).
    BadGateway,
    /// The upstream did not answer within the route's timeout (504 `gateway-timeout`).
    GatewayTimeout { after: Duration },
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::BadTarget | Self::UnreadableBody => StatusCode::BAD_REQUEST,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::KeysUnavailable | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn problem(self) -> Problem {
        let status = self.status();
        match self {
            Self::NoRoute => Problem::new(status, "no-route", "No route")
                .with_detail("No gateway route matches this path."),
            Self::BadTarget => {
                Problem::for_status(status).with_detail("The request path cannot be forwarded.")
            }
            Self::Unauthenticated(why) => {
                Problem::new(status, "unauthenticated", "Authentication required")
                    .with_detail(format!("{why}; sign in again for a new access token."))
                    .with_header(
                        header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer error=\"invalid_token\""),
                    )
            }
            Self::KeysUnavailable => {
                Problem::new(status, "keys-unavailable", "Token keys unavailable")
                    .with_detail(
                        "The gateway has not been able to load the auth service's keys yet; \
                         retry shortly.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Self::RateLimited { scope, retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                Problem::new(status, "rate-limited", "Too many requests")
                    .with_detail(format!(
                        "The {scope} rate limit is used up; retry after {secs} s."
                    ))
                    .with_header(header::RETRY_AFTER, HeaderValue::from(secs))
            }
            Self::TooLarge { limit } => Problem::for_status(status)
                .with_detail(format!("The request body is larger than {limit} bytes.")),
            Self::UnreadableBody => {
                Problem::for_status(status).with_detail("The request body could not be read.")
            }
            Self::Unavailable(Unavailable::CircuitOpen) => {
                Problem::new(status, "circuit-open", "Upstream circuit open")
                    .with_detail(
                        "The upstream service has been failing; the gateway stopped sending \
                         to it for a while.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Self::Unavailable(Unavailable::NoHealthy) => {
                Problem::new(status, "upstream-unavailable", "No healthy upstream")
                    .with_detail(
                        "Every instance of the upstream service is failing its health checks \
                         or ejected.",
                    )
                    .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
            }
            Self::BadGateway => Problem::new(status, "bad-gateway", "Bad gateway").with_detail(
                "The upstream service failed to answer (connection refused, reset or closed \
                 early).",
            ),
            Self::GatewayTimeout { after } => {
                Problem::new(status, "gateway-timeout", "Gateway timeout").with_detail(format!(
                    "The upstream service did not answer within {} ms.",
                    after.as_millis()
                ))
            }
        }
    }

    pub fn into_response(self) -> Response<Body> {
        self.problem().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn rendered(refusal: Refusal) -> (StatusCode, http::HeaderMap, serde_json::Value) {
        let response = refusal.into_response();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 64 * 1024).await.expect("a body");
        let json = serde_json::from_slice(&bytes).expect("problem+json");
        (parts.status, parts.headers, json)
    }

    #[tokio::test]
    async fn every_refusal_is_a_problem_with_its_status_type_and_what_to_do() {
        let cases = [
            (Refusal::NoRoute, "no-route"),
            (Refusal::BadTarget, "bad-request"),
            (
                Refusal::Unauthenticated("no token".into()),
                "unauthenticated",
            ),
            (Refusal::KeysUnavailable, "keys-unavailable"),
            (
                Refusal::RateLimited {
                    scope: "client",
                    retry_after: Duration::from_millis(1200),
                },
                "rate-limited",
            ),
            (Refusal::TooLarge { limit: 10 }, "payload-too-large"),
            (Refusal::UnreadableBody, "bad-request"),
            (
                Refusal::Unavailable(Unavailable::CircuitOpen),
                "circuit-open",
            ),
            (
                Refusal::Unavailable(Unavailable::NoHealthy),
                "upstream-unavailable",
            ),
            (Refusal::BadGateway, "bad-gateway"),
            (
                Refusal::GatewayTimeout {
                    after: Duration::from_millis(1500),
                },
                "gateway-timeout",
            ),
        ];
        for (refusal, slug) in cases {
            let status = refusal.status();
            let (answered, headers, json) = rendered(refusal.clone()).await;
            assert_eq!(answered, status, "{refusal:?}");
            assert_eq!(json["status"], status.as_u16(), "{refusal:?}");
            assert_eq!(json["type"], format!("urn:gravity:problem:{slug}"));
            assert_eq!(
                headers[header::CONTENT_TYPE],
                "application/problem+json",
                "{refusal:?}"
            );
            assert!(
                json["detail"].as_str().is_some_and(|d| !d.is_empty()),
                "{refusal:?}: {json}"
            );
            if status == StatusCode::SERVICE_UNAVAILABLE {
                assert_eq!(headers[header::RETRY_AFTER], "1", "{refusal:?}");
            }
        }
        let (_, headers, json) = rendered(Refusal::RateLimited {
            scope: "user",
            retry_after: Duration::from_millis(1200),
        })
        .await;
        assert_eq!(headers[header::RETRY_AFTER], "2", "rounded up");
        assert_eq!(
            json["detail"],
            "The user rate limit is used up; retry after 2 s."
        );
        let (_, headers, json) = rendered(Refusal::Unauthenticated("expired".into())).await;
        assert_eq!(
            headers[header::WWW_AUTHENTICATE],
            "Bearer error=\"invalid_token\""
        );
        assert_eq!(
            json["detail"],
            "expired; sign in again for a new access token."
        );
    }
}
