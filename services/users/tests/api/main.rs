//! The Users service's HTTP API, tested as a client sees it: real HTTP on a random port
//! and a fresh PostgreSQL database per test. Requests carry the identity headers the gateway
//! would set after verifying a token.

mod contract;
mod events;
mod helpers;
mod privacy;
mod profiles;
