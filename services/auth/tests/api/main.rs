//! The auth service's HTTP API, tested as a client sees it: real HTTP on a random port, a fresh
//! PostgreSQL database per test, real Redis.

mod account;
mod admin;
mod contract;
mod edge;
mod helpers;
mod keys;
mod published;
mod tokens;
mod traces;
