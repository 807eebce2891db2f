//! The events this service reacts to: every event of every service, each appended to the
//! chain in the handler's transaction (see `service_kit::events`: once per event, whatever
//! the broker redelivers; a failure is retried, then parked for `gravity events`).

use std::sync::Arc;

use service_kit::events::{HandledEnvelope, HandlerError, Subscription};
use sqlx::{Postgres, Transaction};

use crate::{chain, entries, state::AppState};

/// `audit.all`, bound to the exchange every service's events pass through. Batched: the
/// handler's only effect is in its transaction, and records of a batch share one lock of
/// the chain's head and one commit.
pub fn every_event(state: AppState) -> Subscription {
    let state = Arc::new(state);
    Subscription::new("all").batched().on_every(move |handled| {
        let state = Arc::clone(&state);
        record(state, handled)
    })
}

async fn record(
    state: Arc<AppState>,
    mut handled: HandledEnvelope,
) -> Result<Transaction<'static, Postgres>, HandlerError> {
    let entry = entries::of_event(&handled.envelope);
    chain::append(
        &mut handled.tx,
        &state.signer,
        state.settings.checkpoint_every,
        &[entry],
    )
    .await?;
    Ok(handled.tx)
}
