//! What the audit log holds about an account, for the users service's export and erasure
//! requests (`service_kit::privacy`): the records where it acted or was acted on. Erasure
//! keeps them: the log is append-only evidence of who did what (its records name an account
//! by id and never hold a secret, nor any service's export of an account), and removing a
//! record would break the chain every later record proves.

use serde_json::{json, Value};
use service_kit::{
    events::HandlerError,
    privacy::{Erasure, PersonalData},
};
use sqlx::PgConnection;
use uuid::Uuid;

/// The most recent records an export carries (with the total).
const EXPORTED_RECORDS: i64 = 1000;

pub struct Records;

impl PersonalData for Records {
    async fn export(&self, conn: &mut PgConnection, user: Uuid) -> Result<Value, HandlerError> {
        let (total, items): (i64, Value) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM audit_records WHERE actor = $1 OR target = $1),
                    coalesce(jsonb_agg(r ORDER BY r.seq DESC), '[]'::jsonb)
             FROM (SELECT seq, occurred_at, source, actor, action, target, origin,
                          data::jsonb AS data
                   FROM audit_records WHERE actor = $1 OR target = $1
                   ORDER BY seq DESC LIMIT $2) r",
        )
        .bind(user.to_string())
        .bind(EXPORTED_RECORDS)
        .fetch_one(&mut *conn)
        .await?;
        Ok(json!({ "records": { "total": total, "items": items } }))
    }

    async fn erase(&self, conn: &mut PgConnection, user: Uuid) -> Result<Erasure, HandlerError> {
        let held: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_records WHERE actor = $1 OR target = $1",
        )
        .bind(user.to_string())
        .fetch_one(&mut *conn)
        .await?;
        if held == 0 {
            return Ok(Erasure::nothing_held());
        }
        Ok(Erasure::retained(format!(
            "{held} audit records naming the account by id are kept: the audit log is \
             append-only evidence of who did what, and holds no secret and no export"
        )))
    }
}
