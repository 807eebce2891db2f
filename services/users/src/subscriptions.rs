//! The events this service reacts to, each handled once in its own transaction (see
//! `service_kit::events`): a failure is retried, then parked for `gravity events`.

use events::auth::{
    PasswordResetRequested, SessionRevoked, UserDeleted, UserRegistered, UserRoleChanged,
    UserUpdated,
};
use serde_json::json;
use service_kit::events::{Handled, HandlerError, Subscription};
use sqlx::{Postgres, Transaction};

use crate::activity;

type Done = Result<Transaction<'static, Postgres>, HandlerError>;

/// `users.accounts`, bound to the auth service's exchange: a profile per account, kept in
/// step with it, and the account's activity. Batched: every effect is in the transaction.
pub fn accounts() -> Subscription {
    Subscription::new("accounts")
        .batched()
        .on(registered)
        .on(updated)
        .on(deleted)
        .on(role_changed)
        .on(session_revoked)
        .on(reset_requested)
}

/// A new account: its profile, named as the account is.
async fn registered(mut handled: Handled<UserRegistered>) -> Done {
    let event = &handled.event;
    sqlx::query(
        "INSERT INTO profiles (user_id, email, display_name, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $4) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(event.user_id)
    .bind(&event.email)
    .bind(&event.full_name)
    .bind(event.registered_at)
    .execute(&mut *handled.tx)
    .await?;
    let summary = json!({ "email": event.email, "role": event.role });
    activity::add(
        &mut handled.tx,
        event.user_id,
        handled.id,
        "auth.user.registered.v1",
        event.registered_at,
        summary,
    )
    .await?;
    Ok(handled.tx)
}

/// The account's email changed (or it was deactivated): the profile follows.
async fn updated(mut handled: Handled<UserUpdated>) -> Done {
    let event = &handled.event;
    sqlx::query("UPDATE profiles SET email = $2, updated_at = now() WHERE user_id = $1")
        .bind(event.user_id)
        .bind(&event.email)
        .execute(&mut *handled.tx)
        .await?;
    let summary = json!({ "email": event.email, "is_active": event.is_active });
    activity::add(
        &mut handled.tx,
        event.user_id,
        handled.id,
        "auth.user.updated.v1",
        event.updated_at,
        summary,
    )
    .await?;
    Ok(handled.tx)
}

/// The account is gone: so are its profile and its activity.
async fn deleted(mut handled: Handled<UserDeleted>) -> Done {
    let user = handled.event.user_id;
    sqlx::query("DELETE FROM profiles WHERE user_id = $1")
        .bind(user)
        .execute(&mut *handled.tx)
        .await?;
    sqlx::query("DELETE FROM activity WHERE user_id = $1")
        .bind(user)
        .execute(&mut *handled.tx)
        .await?;
    tracing::info!(%user, "profile of a deleted account removed");
    Ok(handled.tx)
}

async fn role_changed(mut handled: Handled<UserRoleChanged>) -> Done {
    let event = &handled.event;
    let summary = json!({ "role": event.role, "previous_role": event.previous_role, "changed_by": event.changed_by });
    activity::add(
        &mut handled.tx,
        event.user_id,
        handled.id,
        "auth.user.role_changed.v1",
        event.changed_at,
        summary,
    )
    .await?;
    Ok(handled.tx)
}

async fn session_revoked(mut handled: Handled<SessionRevoked>) -> Done {
    let event = &handled.event;
    let summary = json!({ "reason": event.reason });
    activity::add(
        &mut handled.tx,
        event.user_id,
        handled.id,
        "auth.session.revoked.v1",
        event.revoked_at,
        summary,
    )
    .await?;
    Ok(handled.tx)
}

/// A reset was asked for: only that, never its token.
async fn reset_requested(mut handled: Handled<PasswordResetRequested>) -> Done {
    let event = &handled.event;
    let summary = json!({ "expires_at": event.expires_at });
    activity::add(
        &mut handled.tx,
        event.user_id,
        handled.id,
        "auth.password_reset.requested.v1",
        chrono::Utc::now(),
        summary,
    )
    .await?;
    Ok(handled.tx)
}
