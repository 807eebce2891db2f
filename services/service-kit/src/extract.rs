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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
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
