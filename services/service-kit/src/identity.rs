//! `Identity`: the caller the gateway verified, read from the headers it sets.
//!
//! The gateway checks the access token of every request on a protected route, removes any
//! identity header a client sent, and passes the verified caller on as `X-User-Id`,
//! `X-User-Roles` (comma-separated) and `X-Session-Id`. A service behind it takes `Identity`
//! as a handler argument; a role requirement is one line: `caller.require_role("admin")?`.
//!
//! These headers are trusted because only the gateway reaches services on the platform's
//! private network; a service must not be published to clients except through the gateway.

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, StatusCode},
};
use uuid::Uuid;

use crate::problem::Problem;

/// The verified user's id.
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// The verified user's roles, comma-separated.
pub const USER_ROLES: HeaderName = HeaderName::from_static("x-user-roles");
/// The session (refresh-token family) the access token was issued in.
pub const SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
/// Every identity header: the gateway strips all of them from client requests.
pub const HEADERS: [HeaderName; 3] = [USER_ID, USER_ROLES, SESSION_ID];

/// The caller of a request, as verified by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Uuid,
    pub roles: Vec<String>,
    pub session_id: Uuid,
}

/// Why a request carries no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the request carries no verified caller")]
    Missing,
    #[error("identity header {0} is malformed")]
    Malformed(&'static str),
}

impl Identity {
    /// Reads the identity headers: `Ok(None)` when there are none at all (a public route or a
    /// caller without a token), an error when some are present but missing or malformed.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, IdentityError> {
        if HEADERS.iter().all(|h| !headers.contains_key(h)) {
            return Ok(None);
        }
        let text = |name: &HeaderName, label: &'static str| {
            headers
                .get(name)
                .ok_or(IdentityError::Malformed(label))?
                .to_str()
                .map_err(|_| IdentityError::Malformed(label))
        };
        let uuid = |name: &HeaderName, label: &'static str| {
            Uuid::parse_str(text(name, label)?.trim()).map_err(|_| IdentityError::Malformed(label))
        };
        let user_id = uuid(&USER_ID, "X-User-Id")?;
        let session_id = uuid(&SESSION_ID, "X-Session-Id")?;
        let roles = text(&USER_ROLES, "X-User-Roles")?
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Some(Self {
            user_id,
            roles,
            session_id,
        }))
    }

    /// Whether the caller holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `Ok` when the caller holds `role`; otherwise `MissingRole`, a 403 problem naming it.
    pub fn require_role(&self, role: &str) -> Result<(), MissingRole> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(MissingRole(role.to_owned()))
        }
    }

    /// The headers that carry this identity, for calling another service on the caller's
    /// behalf (and for tests that stand in for the gateway).
    pub fn to_headers(&self) -> Vec<(HeaderName, HeaderValue)> {
        // UUIDs are always valid header values; a role with a character a header cannot
        // carry is left out rather than failing the whole set.
        let uuid = |id: Uuid| {
            HeaderValue::from_str(&id.to_string()).unwrap_or(HeaderValue::from_static(""))
        };
        let roles: Vec<&str> = self
            .roles
            .iter()
            .map(String::as_str)
            .filter(|r| HeaderValue::from_str(r).is_ok() && !r.contains(','))
            .collect();
        vec![
            (USER_ID, uuid(self.user_id)),
            (
                USER_ROLES,
                HeaderValue::from_str(&roles.join(",")).unwrap_or(HeaderValue::from_static("")),
            ),
            (SESSION_ID, uuid(self.session_id)),
        ]
    }
}

/// The caller lacks a role an action needs: 403 `forbidden`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the caller lacks the {0} role")]
pub struct MissingRole(pub String);

impl From<MissingRole> for Problem {
    fn from(MissingRole(role): MissingRole) -> Self {
        Problem::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
            .with_detail(format!("This action needs the '{role}' role."))
    }
}

impl axum::response::IntoResponse for MissingRole {
    fn into_response(self) -> axum::response::Response {
        Problem::from(self).into_response()
    }
}

impl From<IdentityError> for Problem {
    fn from(e: IdentityError) -> Self {
        let detail = match e {
            IdentityError::Missing => "This route needs a signed-in caller: call it through the gateway with 'Authorization: Bearer <access token>'.".to_owned(),
            IdentityError::Malformed(h) => format!("The {h} header is malformed; call this service through the gateway, which sets it."),
        };
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
        )
        .with_detail(detail)
        .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Identity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        Identity::from_headers(&parts.headers)?.ok_or_else(|| IdentityError::Missing.into())
    }
}

/// `Option<Identity>`: `None` for an anonymous caller, still 401 for malformed headers.
impl<S: Send + Sync> OptionalFromRequestParts<S> for Identity {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Problem> {
        Ok(Identity::from_headers(&parts.headers)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert((*name).clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn reads_what_the_gateway_sets() {
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let h = headers(&[
            (&USER_ID, &user.to_string()),
            (&USER_ROLES, "user, admin"),
            (&SESSION_ID, &session.to_string()),
        ]);
        let id = Identity::from_headers(&h).unwrap().unwrap();
        assert_eq!(id.user_id, user);
        assert_eq!(id.session_id, session);
        assert!(id.has_role("admin") && id.has_role("user") && !id.has_role("adm"));
        assert!(id.require_role("admin").is_ok());
        let refused = Problem::from(id.require_role("billing").unwrap_err());
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.slug(), "forbidden");
        let round_trip: HeaderMap = id.to_headers().into_iter().collect();
        assert_eq!(Identity::from_headers(&round_trip).unwrap(), Some(id));
    }

    #[test]
    fn no_headers_is_anonymous_and_partial_or_bad_headers_are_refused() {
        assert_eq!(Identity::from_headers(&HeaderMap::new()), Ok(None));
        let only_user = headers(&[(&USER_ID, &Uuid::new_v4().to_string())]);
        assert!(Identity::from_headers(&only_user).is_err());
        let bad = headers(&[
            (&USER_ID, "not-a-uuid"),
            (&USER_ROLES, "user"),
            (&SESSION_ID, &Uuid::new_v4().to_string()),
        ]);
        assert_eq!(
            Identity::from_headers(&bad),
            Err(IdentityError::Malformed("X-User-Id"))
        );
        let p: Problem = IdentityError::Missing.into();
        assert_eq!(p.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(p.slug(), "unauthenticated");
    }
}
