//! The `gravity` platform manager, as a library: `main.rs` only parses arguments and maps
//! errors to exit codes.
//!
//! **Invariant:** only this crate will talk to Docker.

pub mod engine;
pub mod images;
pub mod manifest;
