//! `Principal`: the authenticated caller of a request, extracted from its bearer token.
//!
//! A token is accepted only if its signature, `kid`, `iss`, `aud` and `exp` check out, its
//! `jti` is not blocked (logout), its session is not revoked (reuse, password change, reset),
//! and its user still exists and is active. Role and permissions are read fresh, so a role
//! change takes effect on the next request, not at the next login.

use std::{
    sync::{Arc, LazyLock, OnceLock},
    time::Duration,
};

use crate::{
    accounts::{UserRecord, USER_COLUMNS},
    error::AuthError,
    sessions,
    state::AppState,
};
use axum::{
    extract::FromRequestParts,
    http::{header, request::Parts},
};
use service_kit::jwt::AccessClaims;

/// What authentication established about a caller.
pub struct Authenticated {
    pub user: UserRecord,
    pub claims: AccessClaims,
    /// The caller's account as `GET /api/v1/me` renders it, rendered once per cached principal.
    me: OnceLock<axum::body::Bytes>,
}

/// The authenticated caller. Cheap to clone: cached principals are shared, not copied.
#[derive(Clone)]
pub struct Principal(Arc<Authenticated>);

impl std::ops::Deref for Principal {
    type Target = Authenticated;

    fn deref(&self) -> &Authenticated {
        &self.0
    }
}

impl Principal {
    fn new(user: UserRecord, claims: AccessClaims) -> Self {
        Self(Arc::new(Authenticated {
            user,
            claims,
            me: OnceLock::new(),
        }))
    }

    /// The account as JSON, the body of `GET /api/v1/me`.
    pub fn me_json(&self) -> Result<axum::body::Bytes, serde_json::Error> {
        if let Some(bytes) = self.me.get() {
            return Ok(bytes.clone());
        }
        let view = crate::routes::dto::UserView::from(self.user.clone());
        let bytes = axum::body::Bytes::from(serde_json::to_vec(&view)?);
        Ok(self.me.get_or_init(|| bytes).clone())
    }

    pub fn require(&self, permission: &'static str) -> Result<(), AuthError> {
        if self.user.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(AuthError::Forbidden(permission))
        }
    }
}

#[derive(sqlx::FromRow)]
struct PrincipalRow {
    #[sqlx(flatten)]
    user: UserRecord,
    session_active: Option<bool>,
}

static PRINCIPAL_SQL: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {USER_COLUMNS}, (f.revoked_at IS NULL AND f.expires_at > now()) AS session_active
         FROM users u JOIN roles r ON r.id = u.role_id
         LEFT JOIN refresh_families f ON f.id = $2 AND f.user_id = u.id
         WHERE u.id = $1"
    )
});

pub fn bearer(parts: &Parts) -> Result<&str, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Unauthenticated("no Authorization header"))?
        .to_str()
        .map_err(|_| AuthError::Unauthenticated("Authorization header is not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or(AuthError::Unauthenticated("expected a Bearer token"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Unauthenticated("expected a Bearer token"));
    }
    Ok(token.trim())
}

/// Principals already authenticated, by the exact token string, tagged with the event
/// generation and key-set version they were checked in, and the second until which they
/// count.
///
/// A hit skips the signature check, the blocklist lookup and the database query: that is what
/// makes authenticated reads cost about as much as unauthenticated ones. A hit counts only
/// while `AuthEvents` is subscribed and no event arrived since the entry was made, the token
/// has not expired, and the entry is younger than `PRINCIPAL_TTL`, which bounds staleness even
/// if an event were lost on a connection that died silently.
///
/// `quick_cache` (CLOCK-Pro eviction, a shard read lock and one atomic per hit) rather than a
/// cache that records every read for its eviction policy: this lookup is on every
/// authenticated request.
#[derive(Clone)]
pub struct PrincipalCache(Arc<Entries>);

type Entries = quick_cache::sync::Cache<
    String,
    Entry,
    quick_cache::UnitWeighter,
    foldhash::quality::RandomState,
>;

#[derive(Clone)]
struct Entry {
    generation: (u64, u64),
    /// Unix second after which the entry no longer counts: the token's `exp`, or the end of
    /// `PRINCIPAL_TTL`, whichever comes first.
    valid_until: i64,
    principal: Principal,
}

pub const PRINCIPAL_TTL: Duration = Duration::from_secs(10);
/// Entries are a token (~600 bytes) and an account (~300 bytes): ~50 MiB at most.
const PRINCIPAL_CAPACITY: usize = 50_000;

impl Default for PrincipalCache {
    fn default() -> Self {
        Self(Arc::new(quick_cache::sync::Cache::with(
            PRINCIPAL_CAPACITY,
            PRINCIPAL_CAPACITY as u64,
            quick_cache::UnitWeighter,
            // Keys are ~600-byte tokens hashed on every request: foldhash (randomly seeded per
            // process) costs a fraction of the default SipHash.
            foldhash::quality::RandomState::default(),
            Default::default(),
        )))
    }
}

pub async fn authenticate(state: &AppState, token: &str) -> Result<Principal, AuthError> {
    let Some(events) = state.events.generation() else {
        return authenticate_uncached(state, token).await;
    };
    let generation = (events, state.keys.version());
    let now = chrono::Utc::now().timestamp();
    if let Some(entry) = state.principals.0.get(token) {
        if entry.generation == generation && now < entry.valid_until {
            return Ok(entry.principal);
        }
    }
    let principal = authenticate_uncached(state, token).await?;
    let ttl = i64::try_from(PRINCIPAL_TTL.as_secs()).unwrap_or(i64::MAX);
    state.principals.0.insert(
        token.to_owned(),
        Entry {
            generation,
            valid_until: principal.claims.exp.min(now.saturating_add(ttl)),
            principal: principal.clone(),
        },
    );
    Ok(principal)
}

async fn authenticate_uncached(state: &AppState, token: &str) -> Result<Principal, AuthError> {
    let claims = state.keys.verify(token).await?;
    let blocked =
        sessions::is_access_token_blocked(&state.redis, &state.settings.redis_prefix, claims.jti);
    let row = sqlx::query_as::<_, PrincipalRow>(&PRINCIPAL_SQL)
        .bind(claims.sub)
        .bind(claims.sid)
        .fetch_optional(&state.db);
    let (blocked, row) = tokio::join!(blocked, row);
    if blocked? {
        return Err(AuthError::Unauthenticated("token has been revoked"));
    }
    let row = row?.ok_or(AuthError::Unauthenticated("account no longer exists"))?;
    if !row.user.is_active {
        return Err(AuthError::Unauthenticated("account is disabled"));
    }
    if row.session_active != Some(true) {
        return Err(AuthError::Unauthenticated("session has been revoked"));
    }
    Ok(Principal::new(row.user, claims))
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts)?;
        authenticate(state, token).await
    }
}
