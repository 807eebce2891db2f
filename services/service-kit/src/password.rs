//! Passwords: a strength policy applied once at the edge (`Password::parse`) and argon2id
//! hashing with OWASP's parameters, run on the blocking pool so it never stalls the executor.

use std::sync::Arc;

use argon2::{
    password_hash::{
        rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
    },
    Algorithm, Argon2, Params, Version,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

pub const MIN_CHARS: usize = 10;
pub const MAX_CHARS: usize = 128;

/// Passwords that pass the length rule but are among the first tried by any attacker.
const COMMON: &[&str] = &[
    "password12",
    "password123",
    "password1234",
    "1234567890",
    "12345678910",
    "qwertyuiop",
    "qwerty1234",
    "qwerty12345",
    "iloveyou12",
    "letmein123",
    "welcome123",
    "admin12345",
    "administrator",
    "changeme123",
    "passw0rd123",
    "abc1234567",
    "1q2w3e4r5t",
    "0987654321",
    "football123",
    "monkey12345",
    "dragon12345",
    "sunshine123",
    "princess123",
    "superman123",
];

/// A new password that satisfies the policy. Its `Debug` never shows the value.
#[derive(Clone)]
pub struct Password(SecretString);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    #[error("password must be at least {MIN_CHARS} characters")]
    TooShort,
    #[error("password must be at most {MAX_CHARS} characters")]
    TooLong,
    #[error("password is too easy to guess; use a longer phrase with more varied characters")]
    TooWeak,
}

impl Password {
    /// Applies the policy: NIST SP 800-63B's length rule, no composition rules, and a refusal
    /// of passwords that are trivially guessable (common, or few distinct characters).
    pub fn parse(raw: SecretString) -> Result<Self, PasswordError> {
        let value = raw.expose_secret();
        let chars = value.chars().count();
        if chars < MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if chars > MAX_CHARS {
            return Err(PasswordError::TooLong);
        }
        let mut distinct: Vec<char> = value.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let lowered = value.to_lowercase();
        if distinct.len() < 5 || COMMON.contains(&lowered.as_str()) {
            return Err(PasswordError::TooWeak);
        }
        Ok(Self(raw))
    }

    pub fn expose(&self) -> &SecretString {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task was cancelled")]
    Cancelled,
}

/// argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1).
///
/// Concurrent hashes are capped at the number of cores: more would only thrash caches and
/// multiply memory (19 MiB each) without finishing any sooner.
#[derive(Clone)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    permits: Arc<Semaphore>,
    /// A hash of a random password, verified against when an account does not exist so that
    /// unknown emails cost the same time as known ones.
    decoy: Arc<str>,
}

impl PasswordHasher {
    pub fn owasp() -> Result<Self, HashError> {
        let params =
            Params::new(19 * 1024, 2, 1, None).map_err(|e| HashError::Hash(e.to_string()))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let decoy_secret = crate::opaque::OpaqueToken::generate();
        let decoy = argon2
            .hash_password(
                decoy_secret.expose().as_bytes(),
                &SaltString::generate(&mut OsRng),
            )
            .map_err(|e| HashError::Hash(e.to_string()))?
            .to_string();
        Ok(Self {
            argon2,
            permits: Arc::new(Semaphore::new(cores)),
            decoy: Arc::from(decoy),
        })
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        let secret = password.expose().clone();
        self.blocking(move || {
            argon2
                .hash_password(
                    secret.expose_secret().as_bytes(),
                    &SaltString::generate(&mut OsRng),
                )
                .map(|h| h.to_string())
                .map_err(|e| HashError::Hash(e.to_string()))
        })
        .await
    }

    /// Checks a candidate against a stored PHC string; `None` verifies against the decoy, so
    /// the caller spends the same time whether or not the account exists, and gets `false`.
    pub async fn verify(
        &self,
        candidate: &SecretString,
        stored: Option<&str>,
    ) -> Result<bool, HashError> {
        let known = stored.is_some();
        let phc: String = stored.unwrap_or(&self.decoy).to_owned();
        let argon2 = self.argon2.clone();
        let secret = candidate.clone();
        let matched = self
            .blocking(move || {
                let parsed = PasswordHash::new(&phc).map_err(|e| HashError::Hash(e.to_string()))?;
                Ok(argon2
                    .verify_password(secret.expose_secret().as_bytes(), &parsed)
                    .is_ok())
            })
            .await?;
        Ok(known && matched)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, HashError> + Send + 'static,
    ) -> Result<T, HashError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| HashError::Cancelled)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|_| HashError::Cancelled)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn policy() {
        assert_eq!(
            Password::parse(secret("short")).unwrap_err(),
            PasswordError::TooShort
        );
        assert_eq!(
            Password::parse(secret("aaaaaaaaaaaa")).unwrap_err(),
            PasswordError::TooWeak
        );
        assert_eq!(
            Password::parse(secret("Password123")).unwrap_err(),
            PasswordError::TooWeak
        );
        assert_eq!(
            Password::parse(secret(&"x1".repeat(65))).unwrap_err(),
            PasswordError::TooLong
        );
        assert!(Password::parse(secret("correct horse battery")).is_ok());
    }

    #[test]
    fn debug_hides_the_value() {
        let p = Password::parse(secret("correct horse battery")).unwrap();
        assert!(!format!("{p:?}").contains("horse"));
    }

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = PasswordHasher::owasp().unwrap();
        let p = Password::parse(secret("correct horse battery")).unwrap();
        let phc = hasher.hash(&p).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(hasher
            .verify(&secret("correct horse battery"), Some(&phc))
            .await
            .unwrap());
        assert!(!hasher
            .verify(&secret("wrong horse battery"), Some(&phc))
            .await
            .unwrap());
        assert!(!hasher
            .verify(&secret("correct horse battery"), None)
            .await
            .unwrap());
    }
}
