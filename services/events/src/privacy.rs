//! Told by every service that holds something about accounts, each on its own exchange, in
//! answer to the users service's requests (`users::ExportRequested`,
//! `users::ErasureRequested`). Types are `<service>.<FACT>` ([`crate::Reply`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Reply;

/// Everything one service holds about an account, for its owner's export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exported {
    pub export_id: Uuid,
    pub user_id: Uuid,
    /// The service's part of the export: its own shape, documented by the service.
    pub data: serde_json::Value,
}

impl Reply for Exported {
    const FACT: &'static str = "privacy.exported.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}

/// What a service did with an erasure request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// What it held about the account is gone.
    Erased,
    /// It held nothing about the account.
    NothingHeld,
    /// It keeps what it holds, for the reason given (an audit log's evidence, say).
    Retained,
    /// It could not erase, for the reason given (the last administrator, say).
    Refused,
}

/// One service's answer to an erasure request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureAnswered {
    pub erasure_id: Uuid,
    pub user_id: Uuid,
    pub outcome: Outcome,
    /// What was erased, or why something was kept or refused, in a sentence.
    pub detail: String,
}

impl Reply for ErasureAnswered {
    const FACT: &'static str = "privacy.erasure_answered.v1";
    fn subject(&self) -> String {
        self.user_id.to_string()
    }
}
