//! Access tokens: EdDSA (Ed25519) JWTs, issued by the auth service and verified anywhere from
//! its published JWKS, without a shared secret.
//!
//! **Invariant:** verification accepts only `EdDSA` and only keys found by `kid` in the key
//! set; `alg: none`, HMAC substitution and unknown `kid`s are refused before any claim is read.

use std::{collections::HashMap, time::Duration};

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine as _};
use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// What an access token says.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user's id.
    pub sub: Uuid,
    pub exp: i64,
    pub iat: i64,
    pub jti: Uuid,
    pub roles: Vec<String>,
    /// The session (refresh-token family) the token was issued in.
    pub sid: Uuid,
}

/// A private Ed25519 key with its id.
pub struct SigningKey {
    kid: String,
    encoding: EncodingKey,
    public: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("signing key could not be generated")]
    Generate,
    #[error("signing key {kid} is not a valid Ed25519 PKCS#8 document")]
    Invalid { kid: String },
}

impl SigningKey {
    /// A new random key; returns it with its PKCS#8 document for storage.
    pub fn generate() -> Result<(Self, Vec<u8>), KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Generate)?;
        let der = pkcs8.as_ref().to_vec();
        let kid = Uuid::now_v7().simple().to_string();
        let key = Self::from_pkcs8(kid, &der)?;
        Ok((key, der))
    }

    pub fn from_pkcs8(kid: String, der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| KeyError::Invalid { kid: kid.clone() })?;
        Ok(Self {
            public: pair.public_key().as_ref().to_vec(),
            encoding: EncodingKey::from_ed_der(der),
            kid,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn jwk(&self) -> Jwk {
        Jwk::ed25519(&self.kid, &self.public)
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, TokenError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(|_| TokenError::Malformed)
    }
}

/// One public key as published in the JWKS (RFC 8037 `OKP` key).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

impl Jwk {
    pub fn ed25519(kid: &str, public: &[u8]) -> Self {
        Self {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(public),
            kid: kid.into(),
            alg: "EdDSA".into(),
            use_: "sig".into(),
        }
    }
}

/// `GET /.well-known/jwks.json`.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Why a token was refused. Only the kind is shown to clients.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("token is malformed")]
    Malformed,
    #[error("token has no key id")]
    MissingKid,
    #[error("token was signed by an unknown key")]
    UnknownKid,
    #[error("token algorithm is not allowed")]
    Algorithm,
    #[error("token signature is invalid")]
    Signature,
    #[error("token has expired")]
    Expired,
    #[error("token was issued by someone else")]
    Issuer,
    #[error("token is meant for another audience")]
    Audience,
}

/// Public keys by `kid`, plus what a valid token must say.
#[derive(Clone)]
pub struct TokenVerifier {
    keys: HashMap<String, DecodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(issuer: &str, audience: &str, jwks: &Jwks) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.leeway = 5;
        let keys = jwks
            .keys
            .iter()
            .filter(|k| k.kty == "OKP" && k.crv == "Ed25519" && k.alg == "EdDSA")
            .filter_map(|k| {
                DecodingKey::from_ed_components(&k.x)
                    .ok()
                    .map(|d| (k.kid.clone(), d))
            })
            .collect();
        Self { keys, validation }
    }

    /// The key id a token names, read before verification to pick the key.
    pub fn kid_of(token: &str) -> Result<String, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        header.kid.ok_or(TokenError::MissingKid)
    }

    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let kid = Self::kid_of(token)?;
        let key = self.keys.get(&kid).ok_or(TokenError::UnknownKid)?;
        jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                ErrorKind::InvalidIssuer => TokenError::Issuer,
                ErrorKind::InvalidAudience => TokenError::Audience,
                ErrorKind::InvalidSignature => TokenError::Signature,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    TokenError::Algorithm
                }
                _ => TokenError::Malformed,
            })
    }
}

/// Claims for a token issued now.
pub fn claims_now(
    issuer: &str,
    audience: &str,
    user: Uuid,
    session: Uuid,
    roles: Vec<String>,
    ttl: Duration,
) -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        iss: issuer.to_owned(),
        aud: audience.to_owned(),
        sub: user,
        exp: now + ttl.as_secs() as i64,
        iat: now,
        jti: Uuid::new_v4(),
        roles,
        sid: session,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (SigningKey, TokenVerifier) {
        let (key, _) = SigningKey::generate().unwrap();
        let verifier = TokenVerifier::new(
            "gravity-auth",
            "gravity",
            &Jwks {
                keys: vec![key.jwk()],
            },
        );
        (key, verifier)
    }

    fn claims() -> AccessClaims {
        claims_now(
            "gravity-auth",
            "gravity",
            Uuid::new_v4(),
            Uuid::new_v4(),
            vec!["user".into()],
            Duration::from_secs(900),
        )
    }

    #[test]
    fn round_trip() {
        let (key, verifier) = setup();
        let c = claims();
        assert_eq!(verifier.verify(&key.sign(&c).unwrap()).unwrap(), c);
    }

    #[test]
    fn refuses_alg_none() {
        let (key, verifier) = setup();
        let token = key.sign(&claims()).unwrap();
        let payload = token.split('.').nth(1).unwrap();
        let header = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            key.kid()
        ));
        let forged = format!("{header}.{payload}.");
        assert!(verifier.verify(&forged).is_err());
    }

    #[test]
    fn refuses_hmac_substitution() {
        let (key, verifier) = setup();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(key.kid().to_owned());
        // The classic attack signs with the public key as an HMAC secret.
        let public = URL_SAFE_NO_PAD.decode(&key.jwk().x).unwrap();
        let forged =
            jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
        assert_eq!(verifier.verify(&forged), Err(TokenError::Algorithm));
    }

    #[test]
    fn refuses_other_keys_issuers_audiences_and_expired() {
        let (key, verifier) = setup();
        let (other, _) = SigningKey::generate().unwrap();
        assert_eq!(
            verifier.verify(&other.sign(&claims()).unwrap()),
            Err(TokenError::UnknownKid)
        );

        let mut c = claims();
        c.iss = "someone-else".into();
        assert_eq!(
            verifier.verify(&key.sign(&c).unwrap()),
            Err(TokenError::Issuer)
        );

        let mut c = claims();
        c.aud = "another-app".into();
        assert_eq!(
            verifier.verify(&key.sign(&c).unwrap()),
            Err(TokenError::Audience)
        );

        let mut c = claims();
        c.exp = chrono::Utc::now().timestamp() - 60;
        assert_eq!(
            verifier.verify(&key.sign(&c).unwrap()),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn refuses_a_tampered_payload() {
        let (key, verifier) = setup();
        let token = key.sign(&claims()).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let mut c = claims();
        c.roles = vec!["admin".into()];
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            verifier.verify(&parts.join(".")),
            Err(TokenError::Signature)
        );
    }
}
