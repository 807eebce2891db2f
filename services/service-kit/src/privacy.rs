//! The part every service plays in its users' privacy rights: when the users service asks
//! for an account's data (`users.export.requested.v1`) or its erasure
//! (`users.erasure.requested.v1`), each service that holds something about accounts answers
//! on its own exchange, in the transaction that read or erased it
//! (`<service>.privacy.exported.v1`, `<service>.privacy.erasure_answered.v1`). The users
//! service gathers the answers; a service added later answers with no change to it.
//!
//! A service says what it holds by implementing [`PersonalData`] and subscribes
//! [`subscription`]:
//!
//! ```text
//! .with_events(&db, events, |consumer| consumer.subscribe(privacy::subscription(SERVICE, Items)))
//! ```

use std::{future::Future, sync::Arc};

use events::{
    privacy::{ErasureAnswered, Exported, Outcome},
    users::{ErasureRequested, ExportRequested},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::events::{record_reply, Handled, HandlerError, Subscription};

/// What one service did with an erasure request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub outcome: Outcome,
    /// What was erased (counts are enough), or why something is kept or refused.
    pub detail: String,
}

impl Erasure {
    pub fn erased(detail: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Erased,
            detail: detail.into(),
        }
    }

    pub fn nothing_held() -> Self {
        Self {
            outcome: Outcome::NothingHeld,
            detail: "nothing was held about the account".to_owned(),
        }
    }

    pub fn retained(reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Retained,
            detail: reason.into(),
        }
    }

    pub fn refused(reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Refused,
            detail: reason.into(),
        }
    }
}

/// What a service holds about accounts, read and erased inside the transaction that
/// handles the request (and records the answer).
pub trait PersonalData: Send + Sync + 'static {
    /// Everything the service holds about `user`, in the service's own documented shape.
    /// Bounded: a long history is cut to its most recent entries, with the total given.
    fn export(
        &self,
        conn: &mut PgConnection,
        user: Uuid,
    ) -> impl Future<Output = Result<serde_json::Value, HandlerError>> + Send;

    /// Forgets what the service holds about `user`, or says why it keeps it.
    fn erase(
        &self,
        conn: &mut PgConnection,
        user: Uuid,
    ) -> impl Future<Output = Result<Erasure, HandlerError>> + Send;
}

/// The queue `<service>.privacy`, answering the users service's export and erasure requests
/// with what `data` reads and erases. Not batched: an erasure may fail alone (and be retried)
/// without holding back others.
pub fn subscription<P: PersonalData>(service: &'static str, data: P) -> Subscription {
    let data = Arc::new(data);
    let for_erasure = Arc::clone(&data);
    Subscription::new("privacy")
        .on(move |handled: Handled<ExportRequested>| {
            let data = Arc::clone(&data);
            async move {
                let mut tx = handled.tx;
                let request = handled.event;
                let part = data.export(&mut tx, request.user_id).await?;
                let answer = Exported {
                    export_id: request.export_id,
                    user_id: request.user_id,
                    data: part,
                };
                record_reply(&mut tx, service, &answer).await?;
                tracing::info!(export = %request.export_id, user = %request.user_id, "export answered");
                Ok(tx)
            }
        })
        .on(move |handled: Handled<ErasureRequested>| {
            let data = Arc::clone(&for_erasure);
            async move {
                let mut tx = handled.tx;
                let request = handled.event;
                let erasure = data.erase(&mut tx, request.user_id).await?;
                let answer = ErasureAnswered {
                    erasure_id: request.erasure_id,
                    user_id: request.user_id,
                    outcome: erasure.outcome,
                    detail: erasure.detail,
                };
                record_reply(&mut tx, service, &answer).await?;
                tracing::info!(
                    erasure = %request.erasure_id,
                    user = %request.user_id,
                    outcome = ?answer.outcome,
                    "erasure answered"
                );
                Ok(tx)
            }
        })
}
