//! `ApiError`: every way a request to this service can fail, and the problem+json each one
//! becomes. The `type` slugs are stable API: add new ones, never rename.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use service_kit::{identity::MissingRole, pagination::PageError, problem, Problem};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("request failed validation")]
    Validation(Vec<(&'static str, String)>),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The caller lacks a role the action needs.
    #[error(transparent)]
    Forbidden(#[from] MissingRole),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Fields named at run time (`attributes.<name>`) that failed their rules.
    #[error("request failed validation")]
    Fields(Vec<(String, String)>),
    #[error("recording an event failed: {0}")]
    Events(#[from] service_kit::events::EventsError),
    #[error("the attribute schema: {0}")]
    Schema(#[from] crate::schema::SchemaError),
    /// The account is being erased: nothing more is gathered about it.
    #[error("the account is being erased")]
    ErasureInProgress,
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn field(field: &'static str, message: impl std::fmt::Display) -> Self {
        ApiError::Validation(vec![(field, message.to_string())])
    }

    /// A validation error listing every field whose check failed (`Some(reason)`).
    pub fn fields<const N: usize>(checks: [(&'static str, Option<String>); N]) -> Self {
        let failed = checks.into_iter().filter_map(|(f, e)| e.map(|e| (f, e)));
        ApiError::Validation(failed.collect())
    }

    pub fn to_problem(&self) -> Problem {
        match self {
            ApiError::Validation(errors) => problem::validation(errors.clone()),
            ApiError::Fields(errors) => problem::validation(errors.clone()),
            ApiError::NotFound(what) => {
                Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
                    .with_detail(format!("No such {what}."))
            }
            ApiError::Forbidden(missing) => missing.clone().into(),
            ApiError::ErasureInProgress => Problem::new(
                StatusCode::CONFLICT,
                "erasure-in-progress",
                "The account is being erased",
            )
            .with_detail(
                "An erasure of this account is under way; its report is at /api/v1/erasures/{id}.",
            ),
            // A pool that cannot hand out a connection, or a dropped connection, is the
            // database being unavailable (503, retry); anything else is a bug (500).
            ApiError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                Problem::unavailable(self)
            }
            ApiError::Database(_)
            | ApiError::Events(_)
            | ApiError::Schema(_)
            | ApiError::Internal(_) => Problem::internal(self),
        }
    }
}

impl From<PageError> for ApiError {
    fn from(e: PageError) -> Self {
        ApiError::field(e.field(), e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.to_problem().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_problems_with_stable_types() {
        let p = ApiError::NotFound("profile").to_problem();
        assert_eq!((p.status(), p.slug()), (StatusCode::NOT_FOUND, "not-found"));
        let p = ApiError::field("name", "must not be empty").to_problem();
        assert_eq!(p.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let p = ApiError::Database(sqlx::Error::PoolTimedOut).to_problem();
        assert_eq!(p.status(), StatusCode::SERVICE_UNAVAILABLE);
        let p = ApiError::from(MissingRole("admin".into())).to_problem();
        assert_eq!((p.status(), p.slug()), (StatusCode::FORBIDDEN, "forbidden"));
        let p = ApiError::ErasureInProgress.to_problem();
        assert_eq!(
            (p.status(), p.slug()),
            (StatusCode::CONFLICT, "erasure-in-progress")
        );
        let p = ApiError::Database(sqlx::Error::RowNotFound).to_problem();
        assert_eq!(p.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
