//! The events this service reacts to, each handled once in its own transaction (see
//! `service_kit::events`): a failure is retried, then parked for `gravity events`. A message
//! an event causes is accepted in that transaction, so it is queued exactly once.

use std::sync::Arc;

use events::auth::{PasswordResetRequested, UserDeleted, UserRegistered, UserUpdated};
use serde_json::{json, Value};
use service_kit::events::{Handled, HandlerError, Subscription};
use sqlx::{PgConnection, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    config::Settings,
    messages::{self, Channel, NewMessage},
    recipients, templates,
};

type Done = Result<Transaction<'static, Postgres>, HandlerError>;

/// What the handlers need of the settings.
struct Context {
    default_locale: String,
    reset_url: String,
}

/// `notifications.accounts`, bound to the auth service's exchange: a recipient per account,
/// a welcome mail when it registers and the reset mail when a reset is asked for.
pub fn accounts(settings: &Settings) -> Subscription {
    let context = Arc::new(Context {
        default_locale: settings.default_locale.clone(),
        reset_url: settings.reset_url.clone(),
    });
    let on_registered = context.clone();
    let on_reset = context;
    Subscription::new("accounts")
        .batched()
        .on(move |handled| registered(on_registered.clone(), handled))
        .on(updated)
        .on(deleted)
        .on(move |handled| reset_requested(on_reset.clone(), handled))
}

async fn registered(context: Arc<Context>, mut handled: Handled<UserRegistered>) -> Done {
    let event = handled.event.clone();
    recipients::upsert(&mut handled.tx, event.user_id, &event.email).await?;
    let data = json!({ "email": event.email, "name": event.full_name });
    queue(
        &mut handled.tx,
        &context,
        "welcome",
        event.user_id,
        &event.email,
        data,
        "auth.user.registered.v1",
    )
    .await?;
    Ok(handled.tx)
}

async fn updated(mut handled: Handled<UserUpdated>) -> Done {
    let event = &handled.event;
    let (user, email) = (event.user_id, event.email.clone());
    recipients::upsert(&mut handled.tx, user, &email).await?;
    Ok(handled.tx)
}

/// The account is gone: so is what this service knew of it, and what was still to be sent.
async fn deleted(mut handled: Handled<UserDeleted>) -> Done {
    let user = handled.event.user_id;
    recipients::delete(&mut handled.tx, user).await?;
    let cancelled = messages::cancel_for_user(&mut handled.tx, user).await?;
    tracing::info!(%user, cancelled, "recipient of a deleted account removed");
    Ok(handled.tx)
}

/// The reset mail, with its link and token: critical, so sent whatever the preferences say.
async fn reset_requested(
    context: Arc<Context>,
    mut handled: Handled<PasswordResetRequested>,
) -> Done {
    let event = handled.event.clone();
    let data = json!({
        "email": event.email,
        "token": event.token,
        "reset_url": context.reset_url.replace("{token}", &event.token),
        "expires_at": event.expires_at.format("%Y-%m-%d %H:%M UTC").to_string(),
    });
    queue(
        &mut handled.tx,
        &context,
        "password_reset",
        event.user_id,
        &event.email,
        data,
        "auth.password_reset.requested.v1",
    )
    .await?;
    Ok(handled.tx)
}

/// Accepts `template`'s mail to `user` in the recipient's locale.
async fn queue(
    conn: &mut PgConnection,
    context: &Context,
    template: &str,
    user: Uuid,
    email: &str,
    data: Value,
    origin: &str,
) -> Result<(), HandlerError> {
    let locale = recipients::find(conn, user)
        .await?
        .and_then(|r| r.locale)
        .unwrap_or_else(|| context.default_locale.clone());
    let Some(template) =
        templates::resolve(conn, template, &locale, &context.default_locale).await?
    else {
        tracing::warn!(template, "no such template: the mail is not sent");
        return Ok(());
    };
    messages::accept(
        conn,
        NewMessage {
            requested_by: None,
            origin: origin.to_owned(),
            idempotency: None,
            user_id: Some(user),
            channel: Channel::Email,
            address: email.to_owned(),
            template,
            data,
            send_at: None,
            digest: None,
        },
    )
    .await?;
    Ok(())
}
