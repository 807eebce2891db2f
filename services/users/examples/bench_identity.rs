//! For `scripts/bench-users.sh`: a fresh identity key and one caller signed with it, as the
//! gateway would pass the caller on. Prints `key=value` lines for the shell:
//! `IDENTITY_PUBLIC_KEY` (the users service verifies with it), `BENCH_USER_ID`, and
//! `BENCH_HEADERS` (`name:value` pairs joined by `|`, for `scripts/wrk/identity.lua`),
//! valid for an hour.

use std::process::ExitCode;

use service_kit::{identity::IdentitySigner, Identity};
use uuid::Uuid;

fn main() -> ExitCode {
    let signer = match IdentitySigner::generate() {
        Ok((signer, _)) => signer,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let caller = Identity {
        user_id: Uuid::new_v4(),
        roles: vec!["user".to_owned()],
        session_id: Uuid::new_v4(),
    };
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        + 3600;
    let headers = match caller.to_signed_headers(&signer, exp) {
        Ok(headers) => headers,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let joined: Vec<String> = headers
        .iter()
        .map(|(name, value)| format!("{name}:{}", value.to_str().unwrap_or_default()))
        .collect();
    println!("IDENTITY_PUBLIC_KEY={}", signer.public_key());
    println!("BENCH_USER_ID={}", caller.user_id);
    println!("BENCH_HEADERS={}", joined.join("|"));
    ExitCode::SUCCESS
}
