//! The `gravity` platform manager, as a library: `main.rs` only parses arguments and maps
//! errors to exit codes.
//!
//! **Invariant:** only this crate talks to Docker, and only to objects carrying its labels.

pub mod build;
pub mod compose;
pub mod containers;
pub mod database;
pub mod down;
pub mod engine;
pub mod events;
pub mod gateway;
pub mod identity;
pub mod images;
pub mod infra;
pub mod loglines;
pub mod logs;
pub mod mail;
pub mod manifest;
pub mod migrate;
pub mod plan;
pub mod progress;
pub mod project;
pub mod ps;
pub mod scaffold;
pub mod status;
pub mod superuser;
pub mod trace;
pub mod up;
pub mod yaml;
