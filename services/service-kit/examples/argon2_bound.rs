//! How many argon2id hashes and verifications per second this machine manages with nothing
//! else to do, using the parameters of `service_kit::password::PasswordHasher::owasp`. A
//! registration costs one hash and a login one verification, so these are the ceilings
//! `scripts/bench-auth.sh` compares the auth service with.
//!
//! Runs one thread per core, as the service allows one hash per core at a time. Each of the
//! two measurements lasts the number of seconds given as the first argument, else in the
//! `SECONDS` environment variable, else 10. Prints `key=value` lines on standard output for
//! scripts to read, and what it measures on standard error:
//!
//! ```text
//! argon2id_hashes_per_sec=61.20
//! argon2id_verifies_per_sec=61.85
//! ```

use std::{
    process::ExitCode,
    thread,
    time::{Duration, Instant},
};

use argon2::{
    password_hash::{
        rand_core::OsRng, PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString,
    },
    Algorithm, Argon2, Params, Version,
};

/// OWASP's argon2id recommendation, as in `PasswordHasher::owasp`: 19 MiB, 2 passes, 1 lane.
const MEMORY_KIB: u32 = 19 * 1024;
const PASSES: u32 = 2;
const LANES: u32 = 1;

const DEFAULT_SECONDS: u64 = 10;

/// The cost of argon2id does not depend on the password, so a fixed one will do.
const PASSWORD: &[u8] = b"correct horse battery staple";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let duration = duration_from_args()?;
    let threads = thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let params = Params::new(MEMORY_KIB, PASSES, LANES, None)
        .map_err(|e| format!("invalid argon2 parameters: {e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    eprintln!(
        "argon2id m={MEMORY_KIB} KiB, t={PASSES}, p={LANES}: {threads} threads, {}s per measurement",
        duration.as_secs()
    );

    let hashes = measure(threads, duration, || hash(&argon2).map(drop))?;
    println!("argon2id_hashes_per_sec={hashes:.2}");

    // A login verifies a stored hash rather than making a new one. The PHC string is parsed
    // on every attempt because the service parses it on every login.
    let stored = hash(&argon2)?;
    let verifies = measure(threads, duration, || {
        let parsed =
            PasswordHash::new(&stored).map_err(|e| format!("cannot parse the hash: {e}"))?;
        argon2
            .verify_password(PASSWORD, &parsed)
            .map_err(|e| format!("verifying the right password failed: {e}"))
    })?;
    println!("argon2id_verifies_per_sec={verifies:.2}");
    Ok(())
}

/// The measurement length: the first argument, else `SECONDS`, else `DEFAULT_SECONDS`.
fn duration_from_args() -> Result<Duration, String> {
    let raw = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SECONDS").ok());
    let Some(raw) = raw else {
        return Ok(Duration::from_secs(DEFAULT_SECONDS));
    };
    match raw.trim().parse::<u64>() {
        Ok(secs) if secs >= 1 => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "the duration must be a whole number of seconds, at least 1, got {raw:?}; \
             pass it as the first argument or in SECONDS"
        )),
    }
}

/// Hashes `PASSWORD` with a fresh salt into a PHC string, as a registration does.
fn hash(argon2: &Argon2<'_>) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    argon2
        .hash_password(PASSWORD, &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing failed: {e}"))
}

/// Runs `work` on `threads` threads until `duration` has passed and returns completions per
/// second, summed over the threads. Each thread divides by its own elapsed time, so the
/// operation still running at the deadline lengthens the time it is counted against instead
/// of being dropped or counted for free.
fn measure<F>(threads: usize, duration: Duration, work: F) -> Result<f64, String>
where
    F: Fn() -> Result<(), String> + Sync,
{
    let work = &work;
    let start = Instant::now();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(move || -> Result<f64, String> {
                    let mut done: u64 = 0;
                    while start.elapsed() < duration {
                        work()?;
                        done += 1;
                    }
                    Ok(done as f64 / start.elapsed().as_secs_f64())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .map_err(|_| "a measuring thread panicked".to_owned())
                    .and_then(|rate| rate)
            })
            .sum::<Result<f64, String>>()
    })
}
