//! The events the auth service tells the others (their types are in the shared `events`
//! crate): each written to the outbox in the transaction of the change it reports, and
//! published on the exchange `auth` by the relay (`service_kit::events`).

use events::Event;
use sqlx::PgConnection;

use crate::error::AuthError;

/// This service's name: the events' source and its exchange.
pub const SERVICE: &str = "auth";

/// Records `event` in the transaction `conn` belongs to.
pub async fn tell<E: Event>(conn: &mut PgConnection, event: &E) -> Result<(), AuthError> {
    service_kit::events::record(conn, SERVICE, event).await?;
    Ok(())
}
