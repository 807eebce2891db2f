//! RFC 9457 problem details: the one shape every HTTP error of every service takes.
//!
//! A problem's `type` is `urn:gravity:problem:<slug>`; slugs are stable API, documented in
//! `docs/ARCHITECTURE.md`, and clients may match on them.

use std::sync::Arc;

use axum::{
    body::Body,
    http::{header, HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use serde_json::{Map, Value};

pub const CONTENT_TYPE: &str = "application/problem+json";
const TYPE_PREFIX: &str = "urn:gravity:problem:";

/// Text of an unexpected failure, attached to a 500 response as an extension so that the
/// logging middleware can log it once. It is never sent to the client.
#[derive(Clone, Debug)]
pub struct InternalErrorReport(pub Arc<str>);

/// A problem details document plus the headers that go with it.
#[derive(Debug, Clone)]
pub struct Problem {
    status: StatusCode,
    slug: &'static str,
    title: String,
    detail: Option<String>,
    extensions: Map<String, Value>,
    headers: Vec<(HeaderName, HeaderValue)>,
    internal: Option<Arc<str>>,
}

impl Problem {
    pub fn new(status: StatusCode, slug: &'static str, title: impl Into<String>) -> Self {
        Self {
            status,
            slug,
            title: title.into(),
            detail: None,
            extensions: Map::new(),
            headers: Vec::new(),
            internal: None,
        }
    }

    /// A 500 whose cause is logged by middleware and never shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        let mut p = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
        )
        .with_detail("The server failed to handle the request; it has been logged. Retry later.");
        p.internal = Some(Arc::from(cause.to_string()));
        p
    }

    /// 503 for a dependency (database, Redis) that is unavailable right now.
    pub fn unavailable(cause: impl std::fmt::Display) -> Self {
        let mut p = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
        )
        .with_detail("A dependency of this service is unavailable; retry shortly.");
        p.internal = Some(Arc::from(cause.to_string()));
        p
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_extension(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn slug(&self) -> &'static str {
        self.slug
    }

    pub fn type_uri(&self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug)
    }

    pub fn to_json(&self) -> Value {
        let mut body = Map::new();
        body.insert("type".into(), Value::String(self.type_uri()));
        body.insert("title".into(), Value::String(self.title.clone()));
        body.insert("status".into(), Value::from(self.status.as_u16()));
        if let Some(detail) = &self.detail {
            body.insert("detail".into(), Value::String(detail.clone()));
        }
        for (k, v) in &self.extensions {
            body.entry(k.clone()).or_insert_with(|| v.clone());
        }
        Value::Object(body)
    }

    /// The problem a bare status code stands for, used for responses that left the stack with
    /// an error status and no body (405 from routing, 408 from the timeout layer, ...).
    pub fn for_status(status: StatusCode) -> Self {
        let (slug, title) = match status {
            StatusCode::BAD_REQUEST => ("bad-request", "Bad request"),
            StatusCode::UNAUTHORIZED => ("unauthorized", "Authentication required"),
            StatusCode::FORBIDDEN => ("forbidden", "Forbidden"),
            StatusCode::NOT_FOUND => ("not-found", "Not found"),
            StatusCode::METHOD_NOT_ALLOWED => ("method-not-allowed", "Method not allowed"),
            StatusCode::REQUEST_TIMEOUT => ("request-timeout", "Request timed out"),
            StatusCode::PAYLOAD_TOO_LARGE => ("payload-too-large", "Request body too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported-media-type", "Unsupported media type")
            }
            StatusCode::TOO_MANY_REQUESTS => ("rate-limited", "Too many requests"),
            StatusCode::SERVICE_UNAVAILABLE => ("unavailable", "Service unavailable"),
            StatusCode::GATEWAY_TIMEOUT => ("gateway-timeout", "Gateway timeout"),
            s if s.is_server_error() => ("internal", "Internal server error"),
            _ => ("http-error", "Request failed"),
        };
        Self::new(status, slug, title)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_json()).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        for (name, value) in self.headers {
            headers.append(name, value);
        }
        if let Some(internal) = self.internal {
            response
                .extensions_mut()
                .insert(InternalErrorReport(internal));
        }
        response
    }
}

/// One field of a request that failed to parse, listed under `errors` in a 422 problem. Field
/// names may be known at compile time (`"name"`) or built (`"attributes.team"`).
pub fn validation<F: std::fmt::Display>(errors: Vec<(F, String)>) -> Problem {
    let detail = errors
        .iter()
        .map(|(field, msg)| format!("{field}: {msg}"))
        .collect::<Vec<_>>()
        .join("; ");
    let list: Vec<Value> = errors
        .into_iter()
        .map(|(field, msg)| serde_json::json!({ "field": field.to_string(), "message": msg }))
        .collect();
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        "Request failed validation",
    )
    .with_detail(detail)
    .with_extension("errors", Value::Array(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_members() {
        let p = Problem::new(
            StatusCode::CONFLICT,
            "email-taken",
            "Email already registered",
        )
        .with_detail("an account with this email exists");
        let json = p.to_json();
        assert_eq!(json["type"], "urn:gravity:problem:email-taken");
        assert_eq!(json["status"], 409);
        assert_eq!(json["title"], "Email already registered");
        assert_eq!(json["detail"], "an account with this email exists");
    }

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let p = Problem::internal("connection refused to 10.0.0.3:5432");
        assert!(!p.to_json().to_string().contains("10.0.0.3"));
        let response = p.into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.extensions().get::<InternalErrorReport>().is_some());
    }
}
