//! What checking the caller costs a service per request, before and after identities became
//! signed assertions: reading the plain identity headers (what `Identity` did before), an
//! assertion seen before (remembered: the common case, one caller sending many requests), and
//! an assertion seen for the first time (its Ed25519 signature checked). Also what the
//! gateway pays once per access token to sign one.
//!
//! ```text
//! cargo run --release -p service-kit --example identity_cost
//! ```
//!
//! Prints `key=value` lines (nanoseconds per operation) on standard output.

use std::{hint::black_box, process::ExitCode, time::Instant};

use axum::http::HeaderMap;
use service_kit::identity::{install, IdentitySigner, IdentityVerifier};
use service_kit::Identity;
use uuid::Uuid;

const ROUNDS: u32 = 200_000;
const FIRST_SEEN: u32 = 5_000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn per_op(start: Instant, n: u32) -> f64 {
    start.elapsed().as_nanos() as f64 / f64::from(n)
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let (signer, _) = IdentitySigner::generate()?;
    if !install(IdentityVerifier::from_base64(&signer.public_key())?) {
        return Err("another identity key is installed".into());
    }
    let caller = Identity {
        user_id: Uuid::new_v4(),
        roles: vec!["user".into(), "editor".into()],
        session_id: Uuid::new_v4(),
    };
    let exp = chrono::Utc::now().timestamp() + 3600;

    let plain: HeaderMap = caller.to_headers().into_iter().collect();
    let start = Instant::now();
    for _ in 0..ROUNDS {
        black_box(Identity::from_plain_headers(black_box(&plain))?);
    }
    let plain_ns = per_op(start, ROUNDS);

    let signed: HeaderMap = caller
        .to_signed_headers(&signer, exp)?
        .into_iter()
        .collect();
    let start = Instant::now();
    for _ in 0..ROUNDS {
        black_box(Identity::from_headers(black_box(&signed))?);
    }
    let remembered_ns = per_op(start, ROUNDS);

    // Distinct assertions (a new session each), each checked once.
    let fresh: Vec<HeaderMap> = (0..FIRST_SEEN)
        .map(|_| {
            let other = Identity {
                session_id: Uuid::new_v4(),
                ..caller.clone()
            };
            other
                .to_signed_headers(&signer, exp)
                .map(|h| h.into_iter().collect())
        })
        .collect::<Result<_, _>>()?;
    let start = Instant::now();
    for headers in &fresh {
        black_box(Identity::from_headers(black_box(headers))?);
    }
    let first_ns = per_op(start, FIRST_SEEN);

    let start = Instant::now();
    for _ in 0..FIRST_SEEN {
        black_box(signer.sign(black_box(&caller), exp)?);
    }
    let sign_ns = per_op(start, FIRST_SEEN);

    println!("plain_headers_ns={plain_ns:.0}");
    println!("assertion_remembered_ns={remembered_ns:.0}");
    println!("assertion_first_seen_ns={first_ns:.0}");
    println!("gateway_sign_ns={sign_ns:.0}");
    Ok(())
}
