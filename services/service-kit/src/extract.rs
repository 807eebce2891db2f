//! Extractors whose rejections are problem+json, so a client sees one error shape whether a
//! handler or the framework refused its request.

use axum::{
    extract::{rejection::JsonRejection, FromRequest, FromRequestParts, Request},
    http::{header, request::Parts, StatusCode},
    response::{IntoResponse, Response},
};
use serde::{de::DeserializeOwned, Serialize};

use crate::problem::Problem;

/// `axum::Json` with problem+json rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(unsupported_media_type("application/json"));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| body_rejection(e.status(), e.body_text()))?;
        let axum::Json(value) = axum::Json::<T>::from_bytes(&bytes).map_err(json_rejection)?;
        if json_has_nul(&bytes) {
            return Err(nul_in("body"));
        }
        // serde reads a struct from a JSON array too (`[null, null]` fills the fields in
        // order), which no client means; every request body of a Gravity service is an object.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Request failed validation",
            )
            .with_detail("The body must be a JSON object."));
        }
        Ok(Self(value))
    }
}

/// PostgreSQL's text cannot hold U+0000, so a string carrying it could only fail later as a
/// server error; every extractor refuses it up front.
fn nul_in(place: &str) -> Problem {
    Problem::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation",
        "Request failed validation",
    )
    .with_detail(format!(
        "Text in the {place} must not contain the character U+0000."
    ))
}

/// Whether a JSON document (already known to parse) has a `\u0000` escape in a string. A raw
/// NUL cannot occur in valid JSON, so the escape is the only spelling. Scanned by hand
/// because serde gives no hook to see every string of an arbitrary `T`, and a second
/// parse into `serde_json::Value` would double the cost of every body.
fn json_has_nul(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(at) = rest.iter().position(|&b| b == b'\\') {
        let escape = rest.get(at + 1..at + 6).unwrap_or_default();
        if escape.first() == Some(&b'u') && escape.get(1..) == Some(&b"0000"[..]) {
            return true;
        }
        // Skip the backslash and the character it escapes, so `\\u0000` is not read as one.
        rest = rest.get(at + 2..).unwrap_or_default();
    }
    false
}

/// Whether form or query text decodes to a U+0000: `%00`, or a raw NUL byte.
fn urlencoded_has_nul(bytes: &[u8]) -> bool {
    bytes.contains(&0) || bytes.windows(3).any(|w| w == b"%00")
}

/// `application/json`, or any `application/*+json`, parameters aside.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5
                && subtype
                    .get(subtype.len() - 5..)
                    .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json")))
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn json_rejection(rejection: JsonRejection) -> Problem {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => unsupported_media_type("application/json"),
        JsonRejection::JsonSyntaxError(e) => Problem::new(
            StatusCode::BAD_REQUEST,
            "malformed-body",
            "Malformed JSON body",
        )
        .with_detail(e.body_text()),
        JsonRejection::JsonDataError(e) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation",
            "Request failed validation",
        )
        .with_detail(e.body_text()),
        JsonRejection::BytesRejection(e) => body_rejection(e.status(), e.body_text()),
        other => Problem::for_status(other.status()).with_detail(other.body_text()),
    }
}

fn body_rejection(status: StatusCode, text: String) -> Problem {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        Problem::for_status(status).with_detail("The request body exceeds this service's limit.")
    } else {
        Problem::for_status(status).with_detail(text)
    }
}

fn unsupported_media_type(expected: &str) -> Problem {
    Problem::for_status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        .with_detail(format!("Send the body with Content-Type: {expected}."))
}

/// A body sent as JSON or as `application/x-www-form-urlencoded`, chosen by Content-Type.
/// OAuth2 clients send forms; everything else tends to send JSON. Both reach one handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonOrForm<T>(pub T);

impl<T, S> FromRequest<S> for JsonOrForm<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        match content_type.as_str() {
            "application/json" => Json::<T>::from_request(req, state)
                .await
                .map(|Json(v)| Self(v)),
            "application/x-www-form-urlencoded" => {
                let bytes = axum::body::Bytes::from_request(req, state)
                    .await
                    .map_err(|e| body_rejection(e.status(), e.body_text()))?;
                if urlencoded_has_nul(&bytes) {
                    return Err(nul_in("body"));
                }
                serde_urlencoded::from_bytes::<T>(&bytes)
                    .map(Self)
                    .map_err(|e| {
                        Problem::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "validation",
                            "Request failed validation",
                        )
                        .with_detail(e.to_string())
                    })
            }
            _ => Err(unsupported_media_type(
                "application/json or application/x-www-form-urlencoded",
            )),
        }
    }
}

/// `axum::extract::Query` with problem+json rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<T>(pub T);

impl<T, S> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if urlencoded_has_nul(parts.uri.query().unwrap_or_default().as_bytes()) {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query string",
            )
            .with_detail("Text must not contain the character U+0000."));
        }
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Self(v))
            .map_err(|e| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "invalid-query",
                    "Invalid query string",
                )
                .with_detail(e.body_text())
            })
    }
}

/// `axum::extract::Path` with problem+json rejections.
#[derive(Debug, Clone, Copy, Default)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Self(v))
            .map_err(|e| {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
                    .with_detail(e.body_text())
            })
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)] // Read by serde only.
    struct Update {
        name: Option<String>,
        active: Option<bool>,
    }

    async fn json(content_type: Option<&str>, body: &str) -> Result<Update, StatusCode> {
        let mut request = Request::builder().method("POST").uri("/");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request
            .body(Body::from(body.to_owned()))
            .map_err(|_| StatusCode::IM_A_TEAPOT)?;
        Json::<Update>::from_request(request, &())
            .await
            .map(|Json(v)| v)
            .map_err(|p| p.into_response().status())
    }

    #[tokio::test]
    async fn a_body_is_a_json_object_or_refused_with_the_status_that_says_why() {
        let ok = |r: Result<Update, StatusCode>| r.map(|_| ());
        assert_eq!(
            ok(json(Some("application/json"), r#" {"name":"a"}"#).await),
            Ok(())
        );
        assert_eq!(
            ok(json(Some("Application/JSON; charset=utf-8"), "{}").await),
            Ok(())
        );
        assert_eq!(
            ok(json(Some("application/merge-patch+json"), "{}").await),
            Ok(())
        );
        // serde would fill the struct from an array; the extractor refuses it.
        assert_eq!(
            ok(json(Some("application/json"), "[null, null]").await),
            Err(StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert_eq!(
            ok(json(Some("application/json"), r#"{"active":"yes"}"#).await),
            Err(StatusCode::UNPROCESSABLE_ENTITY)
        );
        assert_eq!(
            ok(json(Some("application/json"), "{").await),
            Err(StatusCode::BAD_REQUEST)
        );
        assert_eq!(
            ok(json(Some("application/json"), r#"{"name":"a\u0000b"}"#).await),
            Err(StatusCode::UNPROCESSABLE_ENTITY)
        );
        // An escaped backslash followed by `u0000` is six ordinary characters.
        assert_eq!(
            ok(json(Some("application/json"), r#"{"name":"a\\u0000"}"#).await),
            Ok(())
        );
        assert!(urlencoded_has_nul(b"email=a%00b") && urlencoded_has_nul(b"a=\0"));
        assert!(!urlencoded_has_nul(b"email=a%2500b"));
        assert_eq!(
            ok(json(None, "{}").await),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
        assert_eq!(
            ok(json(Some("text/plain"), "{}").await),
            Err(StatusCode::UNSUPPORTED_MEDIA_TYPE)
        );
    }
}
