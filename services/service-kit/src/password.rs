//! Passwords: a strength policy applied once at the edge (`Password::parse`) and argon2id
//! hashing with OWASP's parameters, run on the blocking pool so it never stalls the executor.

use std::sync::{Arc, Mutex};

use argon2::{
    password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString},
    Algorithm, Argon2, Block, Params, Version,
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

/// Why no password could be read for a command-line tool.
#[derive(Debug, thiserror::Error)]
pub enum ReadPasswordError {
    #[error("reading the password from standard input: {0}")]
    Stdin(std::io::Error),
    #[error("reading the password ({0}); use --password-stdin when there is no terminal")]
    Prompt(std::io::Error),
    #[error("the two passwords differ; run the command again")]
    Mismatch,
    #[error(transparent)]
    Weak(#[from] PasswordError),
}

/// Reads a new password for a command-line tool: the first line of standard input, or asked
/// twice on the terminal without echo. Never from the command line, where other users of the
/// machine could see it.
pub fn read_new_password(from_stdin: bool) -> Result<Password, ReadPasswordError> {
    use std::io::Read as _;
    let raw = if from_stdin {
        let mut buf = String::new();
        std::io::stdin()
            .take(4096)
            .read_to_string(&mut buf)
            .map_err(ReadPasswordError::Stdin)?;
        buf.lines().next().unwrap_or("").to_owned()
    } else {
        let first = rpassword::prompt_password("password: ").map_err(ReadPasswordError::Prompt)?;
        let second =
            rpassword::prompt_password("password (again): ").map_err(ReadPasswordError::Prompt)?;
        if first != second {
            return Err(ReadPasswordError::Mismatch);
        }
        first
    };
    Ok(Password::parse(SecretString::from(raw))?)
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

impl From<argon2::Error> for HashError {
    fn from(e: argon2::Error) -> Self {
        HashError::Hash(e.to_string())
    }
}

impl From<argon2::password_hash::Error> for HashError {
    fn from(e: argon2::password_hash::Error) -> Self {
        HashError::Hash(e.to_string())
    }
}

/// argon2id with OWASP's parameters (m = 19 MiB, t = 2, p = 1).
///
/// Concurrent hashes are capped at the number of cores: more would only thrash caches and
/// multiply memory without finishing any sooner. Each running hash borrows one of at most
/// that many 19 MiB work areas, kept between calls: allocating a fresh one per hash costs
/// page faults on every call and, across the blocking pool's many threads, leaves hundreds of
/// MiB resident in allocator arenas. The `argon2` crate's `PasswordHasher` trait allocates per
/// call, which is why hashing and verifying below go through `hash_password_into_with_memory`.
#[derive(Clone)]
pub struct PasswordHasher {
    params: Params,
    permits: Arc<Semaphore>,
    work_areas: Arc<Mutex<Vec<Vec<Block>>>>,
    /// A hash of a random password, verified against when an account does not exist so that
    /// unknown emails cost the same time as known ones.
    decoy: Arc<str>,
}

impl PasswordHasher {
    pub fn owasp() -> Result<Self, HashError> {
        let params = Params::new(19 * 1024, 2, 1, Some(32))?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let mut hasher = Self {
            params,
            permits: Arc::new(Semaphore::new(cores)),
            work_areas: Arc::new(Mutex::new(Vec::with_capacity(cores))),
            decoy: Arc::from(""),
        };
        let decoy_secret = crate::opaque::OpaqueToken::generate();
        hasher.decoy = Arc::from(hasher.hash_now(decoy_secret.expose().as_bytes())?);
        Ok(hasher)
    }

    fn argon2(params: Params) -> Argon2<'static> {
        Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
    }

    /// Runs `work` with a work area of `blocks` blocks, reusing a pooled one when it fits.
    fn with_work_area<T>(&self, blocks: usize, work: impl FnOnce(&mut [Block]) -> T) -> T {
        let pooled = self.work_areas.lock().ok().and_then(|mut pool| pool.pop());
        let mut area = match pooled {
            Some(area) if area.len() == blocks => area,
            _ => vec![Block::default(); blocks],
        };
        let result = work(&mut area);
        // Only areas of the current parameters are kept; hashes stored with older parameters
        // still verify, with a one-off allocation.
        if blocks == self.params.block_count() {
            if let Ok(mut pool) = self.work_areas.lock() {
                pool.push(area);
            }
        }
        result
    }

    fn hash_now(&self, password: &[u8]) -> Result<String, HashError> {
        let salt = SaltString::generate(&mut OsRng);
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.as_salt().decode_b64(&mut salt_bytes)?;
        let mut out = [0u8; 32];
        self.with_work_area(self.params.block_count(), |area| {
            Self::argon2(self.params.clone())
                .hash_password_into_with_memory(password, salt_bytes, &mut out, area)
        })?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params)?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out)?),
        };
        Ok(phc.to_string())
    }

    fn verify_now(&self, password: &[u8], stored: &str) -> Result<bool, HashError> {
        let parsed = PasswordHash::new(stored)?;
        if parsed.algorithm != argon2::ARGON2ID_IDENT {
            return Err(HashError::Hash(format!(
                "unsupported algorithm {}",
                parsed.algorithm
            )));
        }
        let params = Params::try_from(&parsed)?;
        let version = parsed
            .version
            .map(Version::try_from)
            .transpose()?
            .unwrap_or_default();
        let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
            return Err(HashError::Hash("stored hash has no salt or output".into()));
        };
        let mut salt_bytes = [0u8; 64];
        let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
        let mut out = vec![0u8; expected.len()];
        let argon2 = Argon2::new(Algorithm::Argon2id, version, params.clone());
        self.with_work_area(params.block_count(), |area| {
            argon2.hash_password_into_with_memory(password, salt_bytes, &mut out, area)
        })?;
        // `Output`'s equality is constant-time.
        Ok(Output::new(&out)? == expected)
    }

    /// Hashes a new password into a PHC string.
    pub async fn hash(&self, password: &Password) -> Result<String, HashError> {
        let this = self.clone();
        let secret = password.expose().clone();
        self.blocking(move || this.hash_now(secret.expose_secret().as_bytes()))
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
        let this = self.clone();
        let secret = candidate.clone();
        let matched = self
            .blocking(move || this.verify_now(secret.expose_secret().as_bytes(), &phc))
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

    #[tokio::test]
    async fn verifies_hashes_made_by_the_reference_implementation() {
        use argon2::password_hash::PasswordHasher as _;
        // Written by the `argon2` crate's own API, with other parameters: a stored hash from
        // before a parameter change must keep working.
        let params = Params::new(8 * 1024, 3, 1, None).unwrap();
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"correct horse battery", &SaltString::generate(&mut OsRng))
            .unwrap()
            .to_string();
        let hasher = PasswordHasher::owasp().unwrap();
        assert!(hasher
            .verify(&secret("correct horse battery"), Some(&phc))
            .await
            .unwrap());
        assert!(!hasher
            .verify(&secret("wrong horse battery"), Some(&phc))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn our_hashes_verify_with_the_reference_implementation() {
        use argon2::password_hash::PasswordVerifier as _;
        let hasher = PasswordHasher::owasp().unwrap();
        let p = Password::parse(secret("correct horse battery")).unwrap();
        let phc = hasher.hash(&p).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(Argon2::default()
            .verify_password(b"correct horse battery", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"wrong horse battery", &parsed)
            .is_err());
    }
}
