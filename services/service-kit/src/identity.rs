//! `Identity`: the caller the gateway verified, checked again by the service.
//!
//! The gateway checks the access token of every request on a protected route, removes any
//! identity header a client sent, and passes the verified caller on as an assertion it signs
//! (`X-Identity-Assertion`: an EdDSA JWT with the user, roles, session and the access token's
//! expiry, issuer `gravity-gateway`), beside the plain `X-User-Id`, `X-User-Roles` and
//! `X-Session-Id` for logs and tools. Only the gateway holds the private key
//! (`GATEWAY_IDENTITY_KEY`); every service is given the public one (`IDENTITY_PUBLIC_KEY`).
//! A service takes `Identity` as a handler argument; a role requirement is one line:
//! `caller.require_role("admin")?`.
//!
//! **Invariant:** an identity is taken from a verified assertion only. Identity headers
//! without one, with a forged or expired one, or at a service that has no public key, are
//! refused with 401: reaching a service's port directly does not make anyone an admin.
//! Verified assertions are remembered until they expire, so a caller's repeated requests
//! cost a hash lookup, not a signature check.

use std::sync::{Arc, OnceLock};

use axum::{
    extract::{FromRequestParts, OptionalFromRequestParts},
    http::{header, request::Parts, HeaderMap, HeaderName, HeaderValue, StatusCode},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::problem::Problem;

/// The verified user's id.
pub const USER_ID: HeaderName = HeaderName::from_static("x-user-id");
/// The verified user's roles, comma-separated.
pub const USER_ROLES: HeaderName = HeaderName::from_static("x-user-roles");
/// The session (refresh-token family) the access token was issued in.
pub const SESSION_ID: HeaderName = HeaderName::from_static("x-session-id");
/// The gateway's signed assertion of the caller: the only identity header a service trusts.
pub const ASSERTION: HeaderName = HeaderName::from_static("x-identity-assertion");
/// Every identity header: the gateway strips all of them from client requests.
pub const HEADERS: [HeaderName; 4] = [USER_ID, USER_ROLES, SESSION_ID, ASSERTION];

/// The assertion's issuer and audience.
const ISSUER: &str = "gravity-gateway";
const AUDIENCE: &str = "gravity-services";
/// Verified assertions a service remembers.
const REMEMBERED: usize = 10_000;

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
    #[error("the identity headers carry no assertion signed by the gateway")]
    Unsigned,
    #[error("the identity assertion is forged, expired or not for this platform")]
    Invalid,
    #[error("this service has no public key to check identities with (IDENTITY_PUBLIC_KEY)")]
    NoKey,
}

/// What the gateway signs.
#[derive(Debug, Serialize, Deserialize)]
struct AssertionClaims {
    iss: String,
    aud: String,
    sub: Uuid,
    roles: Vec<String>,
    sid: Uuid,
    exp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityKeyError {
    #[error("an identity key could not be generated")]
    Generate,
    #[error("{0} is not an unpadded base64url Ed25519 key (PKCS#8 for the private key, the 32 raw bytes for the public one)")]
    Invalid(&'static str),
    #[error("the identity assertion could not be signed")]
    Sign,
}

/// The gateway's private key: signs the callers it passes on.
pub struct IdentitySigner {
    encoding: EncodingKey,
    public: Vec<u8>,
}

impl std::fmt::Debug for IdentitySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdentitySigner([redacted])")
    }
}

impl IdentitySigner {
    /// A new random key, with its PKCS#8 document in unpadded base64url (for storage).
    pub fn generate() -> Result<(Self, String), IdentityKeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| IdentityKeyError::Generate)?;
        let encoded = URL_SAFE_NO_PAD.encode(pkcs8.as_ref());
        Ok((Self::from_base64(&encoded)?, encoded))
    }

    /// From its PKCS#8 document in unpadded base64url (`GATEWAY_IDENTITY_KEY`).
    pub fn from_base64(encoded: &str) -> Result<Self, IdentityKeyError> {
        let invalid = || IdentityKeyError::Invalid("GATEWAY_IDENTITY_KEY");
        let der = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .map_err(|_| invalid())?;
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map_err(|_| invalid())?;
        Ok(Self {
            public: pair.public_key().as_ref().to_vec(),
            encoding: EncodingKey::from_ed_der(&der),
        })
    }

    /// The public key services verify with, in unpadded base64url (`IDENTITY_PUBLIC_KEY`).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(&self.public)
    }

    /// The assertion of `identity`, valid until `exp` (seconds since the epoch: the access
    /// token's own expiry).
    pub fn sign(&self, identity: &Identity, exp: i64) -> Result<String, IdentityKeyError> {
        let claims = AssertionClaims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sub: identity.user_id,
            roles: identity.roles.clone(),
            sid: identity.session_id,
            exp,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.encoding)
            .map_err(|_| IdentityKeyError::Sign)
    }
}

/// A service's public key for the gateway's assertions, and the assertions it verified.
pub struct IdentityVerifier {
    public: String,
    decoding: DecodingKey,
    validation: Validation,
    remembered: quick_cache::sync::Cache<String, (Identity, i64)>,
}

impl std::fmt::Debug for IdentityVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdentityVerifier({})", self.public)
    }
}

impl IdentityVerifier {
    /// From the gateway's public key in unpadded base64url (`IDENTITY_PUBLIC_KEY`).
    pub fn from_base64(encoded: &str) -> Result<Self, IdentityKeyError> {
        let raw = URL_SAFE_NO_PAD
            .decode(encoded.trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or(IdentityKeyError::Invalid("IDENTITY_PUBLIC_KEY"))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Ok(Self {
            public: encoded.trim().to_owned(),
            decoding: DecodingKey::from_ed_der(&raw),
            validation,
            remembered: quick_cache::sync::Cache::new(REMEMBERED),
        })
    }

    /// The identity `assertion` proves, checking its signature unless it was checked before.
    pub fn verify(&self, assertion: &str) -> Result<Identity, IdentityError> {
        let now = unix_now();
        if let Some((identity, exp)) = self.remembered.get(assertion) {
            if now < exp + self.validation.leeway as i64 {
                return Ok(identity);
            }
            self.remembered.remove(assertion);
            return Err(IdentityError::Invalid);
        }
        let claims =
            jsonwebtoken::decode::<AssertionClaims>(assertion, &self.decoding, &self.validation)
                .map_err(|_| IdentityError::Invalid)?
                .claims;
        let identity = Identity {
            user_id: claims.sub,
            roles: claims.roles,
            session_id: claims.sid,
        };
        self.remembered
            .insert(assertion.to_owned(), (identity.clone(), claims.exp));
        Ok(identity)
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The process's verifier, set once at start-up from the service's settings.
static VERIFIER: OnceLock<Arc<IdentityVerifier>> = OnceLock::new();

/// Makes `verifier` the one every `Identity` extraction in this process uses. The first one
/// installed stays (a process serves one platform); returns whether `verifier`'s key is the
/// one in force.
pub fn install(verifier: IdentityVerifier) -> bool {
    let public = verifier.public.clone();
    let installed = VERIFIER.get_or_init(|| Arc::new(verifier));
    installed.public == public
}

impl Identity {
    /// The caller of a request: `Ok(None)` when it carries no identity header at all (a
    /// public route or a caller without a token), the assertion's identity when the installed
    /// verifier accepts it, and an error otherwise (identity headers without an assertion,
    /// a forged or expired one, or no verifier installed).
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, IdentityError> {
        if HEADERS.iter().all(|h| !headers.contains_key(h)) {
            return Ok(None);
        }
        let assertion = headers
            .get(&ASSERTION)
            .ok_or(IdentityError::Unsigned)?
            .to_str()
            .map_err(|_| IdentityError::Malformed("X-Identity-Assertion"))?;
        let verifier = VERIFIER.get().ok_or(IdentityError::NoKey)?;
        verifier.verify(assertion).map(Some)
    }

    /// Reads the plain identity headers alone, trusting them (what the gateway sets beside
    /// its assertion, for logs and tools). Never a basis for access decisions.
    pub fn from_plain_headers(headers: &HeaderMap) -> Result<Option<Self>, IdentityError> {
        if [USER_ID, USER_ROLES, SESSION_ID]
            .iter()
            .all(|h| !headers.contains_key(h))
        {
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

    /// The headers that carry this identity, its assertion signed by `signer` until `exp`:
    /// what the gateway sends, and what tests standing in for the gateway send.
    pub fn to_signed_headers(
        &self,
        signer: &IdentitySigner,
        exp: i64,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, IdentityKeyError> {
        let assertion = signer.sign(self, exp)?;
        let mut headers = self.to_headers();
        headers.push((
            ASSERTION,
            HeaderValue::from_str(&assertion).map_err(|_| IdentityKeyError::Sign)?,
        ));
        Ok(headers)
    }

    /// The plain headers of this identity, without an assertion (services refuse these
    /// alone).
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
            IdentityError::Unsigned | IdentityError::Invalid => "The caller's identity is not signed by the platform's gateway; call this service through the gateway with 'Authorization: Bearer <access token>'.".to_owned(),
            IdentityError::NoKey => "This service cannot check callers' identities; its operator must set IDENTITY_PUBLIC_KEY.".to_owned(),
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

    /// The process-wide verifier, installed once with a key of these tests.
    fn signer() -> &'static IdentitySigner {
        static SIGNER: OnceLock<IdentitySigner> = OnceLock::new();
        SIGNER.get_or_init(|| {
            let (signer, _) = IdentitySigner::generate().unwrap();
            assert!(install(
                IdentityVerifier::from_base64(&signer.public_key()).unwrap()
            ));
            signer
        })
    }

    #[test]
    fn reads_what_the_gateway_signs() {
        let signer = signer();
        let (user, session) = (Uuid::new_v4(), Uuid::new_v4());
        let id = Identity {
            user_id: user,
            roles: vec!["user".into(), "admin".into()],
            session_id: session,
        };
        let exp = unix_now() + 60;
        let h: HeaderMap = id
            .to_signed_headers(signer, exp)
            .unwrap()
            .into_iter()
            .collect();
        let read = Identity::from_headers(&h).unwrap().unwrap();
        assert_eq!(read, id);
        assert!(read.has_role("admin") && read.has_role("user") && !read.has_role("adm"));
        assert!(read.require_role("admin").is_ok());
        let refused = Problem::from(read.require_role("billing").unwrap_err());
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert_eq!(refused.slug(), "forbidden");
        // Remembered: the same assertion again.
        assert_eq!(Identity::from_headers(&h).unwrap(), Some(id));
    }

    #[test]
    fn plain_forged_expired_or_foreign_identities_are_refused() {
        let signer = signer();
        let admin = Identity {
            user_id: Uuid::new_v4(),
            roles: vec!["admin".into()],
            session_id: Uuid::new_v4(),
        };
        // Plain headers, as anyone reaching the port could send them.
        let plain: HeaderMap = admin.to_headers().into_iter().collect();
        assert_eq!(Identity::from_headers(&plain), Err(IdentityError::Unsigned));
        assert_eq!(
            Identity::from_plain_headers(&plain).unwrap(),
            Some(admin.clone())
        );
        // Signed by another key.
        let (stranger, _) = IdentitySigner::generate().unwrap();
        let foreign: HeaderMap = admin
            .to_signed_headers(&stranger, unix_now() + 60)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(
            Identity::from_headers(&foreign),
            Err(IdentityError::Invalid)
        );
        // Expired.
        let old: HeaderMap = admin
            .to_signed_headers(signer, unix_now() - 60)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(Identity::from_headers(&old), Err(IdentityError::Invalid));
        // A valid assertion with the roles changed in its payload.
        let mut tampered: HeaderMap = admin
            .to_signed_headers(signer, unix_now() + 60)
            .unwrap()
            .into_iter()
            .collect();
        let token = tampered[&ASSERTION].to_str().unwrap().to_owned();
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["roles"] = serde_json::json!(["admin", "owner"]);
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            URL_SAFE_NO_PAD.encode(claims.to_string()),
            parts[2]
        );
        tampered.insert(ASSERTION, HeaderValue::from_str(&forged).unwrap());
        assert_eq!(
            Identity::from_headers(&tampered),
            Err(IdentityError::Invalid)
        );
        let p: Problem = IdentityError::Invalid.into();
        assert_eq!(p.status(), StatusCode::UNAUTHORIZED);
    }

    #[test]
    fn no_headers_is_anonymous_and_partial_or_bad_headers_are_refused() {
        assert_eq!(Identity::from_headers(&HeaderMap::new()), Ok(None));
        let only_user = headers(&[(&USER_ID, &Uuid::new_v4().to_string())]);
        assert!(Identity::from_headers(&only_user).is_err());
        assert!(Identity::from_plain_headers(&only_user).is_err());
        let bad = headers(&[
            (&USER_ID, "not-a-uuid"),
            (&USER_ROLES, "user"),
            (&SESSION_ID, &Uuid::new_v4().to_string()),
        ]);
        assert_eq!(
            Identity::from_plain_headers(&bad),
            Err(IdentityError::Malformed("X-User-Id"))
        );
        assert_eq!(Identity::from_headers(&bad), Err(IdentityError::Unsigned));
        let p: Problem = IdentityError::Missing.into();
        assert_eq!(p.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(p.slug(), "unauthenticated");
    }
}
