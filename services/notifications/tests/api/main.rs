//! The Notifications service's HTTP API, tested as a client sees it: real HTTP on a random
//! port, a fresh PostgreSQL database per test, and real SMTP (the mail catcher
//! `scripts/dev-deps.sh` starts). Requests carry the identity headers the gateway would set
//! after verifying a token.

mod contract;
mod events;
mod helpers;
mod sending;
mod sms;
mod templates;
