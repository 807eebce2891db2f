//! Accounts: creating users, checking passwords, changing them, and the admin's view.

use chrono::{DateTime, Utc};
use events::auth::UserRegistered;
use secrecy::SecretString;
use service_kit::{password::PasswordHasher, Email, Password};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::{
    domain::ADMIN_ROLE,
    error::{is_unique_violation, AuthError},
    published,
};

/// A user as stored, joined with its role.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub full_name: Option<String>,
    pub role: String,
    pub permissions: Vec<String>,
    pub is_active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub const USER_COLUMNS: &str =
    "u.id, u.email, u.full_name, r.name AS role, r.permissions, u.is_active, \
     u.created_at, u.updated_at";

/// Inserts a user with the named role inside `tx`. A taken email is `EmailTaken`, decided by
/// the unique index, so two concurrent registrations cannot both succeed.
pub async fn insert(
    tx: &mut Transaction<'_, Postgres>,
    email: &Email,
    password_hash: &str,
    full_name: Option<&str>,
    role: &str,
) -> Result<UserRecord, AuthError> {
    let inserted = sqlx::query_as::<_, UserRecord>(&format!(
        "WITH inserted AS (
             INSERT INTO users (id, email, password_hash, full_name, role_id)
             SELECT $1, $2, $3, $4, r.id FROM roles r WHERE r.name = $5
             RETURNING *
         )
         SELECT {USER_COLUMNS} FROM inserted u JOIN roles r ON r.id = u.role_id"
    ))
    .bind(Uuid::now_v7())
    .bind(email.as_str())
    .bind(password_hash)
    .bind(full_name)
    .bind(role)
    .fetch_optional(&mut **tx)
    .await;
    match inserted {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(AuthError::UnknownRole(role.to_owned())),
        Err(e) if is_unique_violation(&e) => Err(AuthError::EmailTaken),
        Err(e) => Err(e.into()),
    }
}

pub async fn find(db: &PgPool, id: Uuid) -> Result<Option<UserRecord>, AuthError> {
    Ok(sqlx::query_as::<_, UserRecord>(&format!(
        "SELECT {USER_COLUMNS} FROM users u JOIN roles r ON r.id = u.role_id WHERE u.id = $1"
    ))
    .bind(id)
    .fetch_optional(db)
    .await?)
}

#[derive(sqlx::FromRow)]
struct Credentials {
    #[sqlx(flatten)]
    user: UserRecord,
    password_hash: String,
}

/// The account an email and password identify. Costs one argon2id verification whether or
/// not the email exists, so response times do not reveal which emails have accounts.
pub async fn authenticate(
    db: &PgPool,
    hasher: &PasswordHasher,
    email: &str,
    password: &SecretString,
) -> Result<UserRecord, AuthError> {
    let found = sqlx::query_as::<_, Credentials>(&format!(
        "SELECT {USER_COLUMNS}, u.password_hash FROM users u JOIN roles r ON r.id = u.role_id WHERE u.email = $1"
    ))
    .bind(email)
    .fetch_optional(db)
    .await?;
    let matched = hasher
        .verify(password, found.as_ref().map(|c| c.password_hash.as_str()))
        .await?;
    match found {
        Some(c) if matched && c.user.is_active => Ok(c.user),
        Some(_) if matched => Err(AuthError::AccountDisabled),
        _ => Err(AuthError::InvalidCredentials),
    }
}

/// Checks `current` against the stored hash of `user`.
pub async fn verify_password(
    db: &PgPool,
    hasher: &PasswordHasher,
    user: Uuid,
    current: &SecretString,
) -> Result<bool, AuthError> {
    let stored: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
            .bind(user)
            .fetch_optional(db)
            .await?;
    Ok(hasher.verify(current, stored.as_deref()).await?)
}

pub async fn set_password(
    tx: &mut Transaction<'_, Postgres>,
    user: Uuid,
    password_hash: &str,
) -> Result<(), AuthError> {
    sqlx::query(
        "UPDATE users SET password_hash = $2, password_changed_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(user)
    .bind(password_hash)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Creates an active admin without going through HTTP: the way the first admin of a platform
/// comes to exist (`auth create-superuser`, and `gravity create-superuser` through it).
pub async fn create_superuser(
    db: &PgPool,
    hasher: &PasswordHasher,
    email: &Email,
    password: &Password,
) -> Result<UserRecord, AuthError> {
    let hash = hasher.hash(password).await?;
    let mut tx = db.begin().await?;
    let user = insert(&mut tx, email, &hash, None, ADMIN_ROLE).await?;
    tell_registered(&mut tx, &user).await?;
    tx.commit().await?;
    Ok(user)
}

/// Tells the other services an account was created, in the transaction that created it.
pub async fn tell_registered(conn: &mut PgConnection, user: &UserRecord) -> Result<(), AuthError> {
    let event = UserRegistered {
        user_id: user.id,
        email: user.email.clone(),
        full_name: user.full_name.clone(),
        role: user.role.clone(),
        registered_at: user.created_at,
    };
    published::tell(conn, &event).await
}

/// Fails with `LastAdmin` if no active admin other than `user` would remain. Takes a lock on
/// the admin rows so two concurrent demotions cannot each see the other as the remaining admin.
pub async fn ensure_other_admin(conn: &mut PgConnection, user: Uuid) -> Result<(), AuthError> {
    let others: Vec<Uuid> = sqlx::query_scalar(
        "SELECT u.id FROM users u JOIN roles r ON r.id = u.role_id
         WHERE r.name = $1 AND u.is_active ORDER BY u.id FOR UPDATE OF u",
    )
    .bind(ADMIN_ROLE)
    .fetch_all(&mut *conn)
    .await?;
    if others.iter().all(|id| *id == user) && others.contains(&user) {
        return Err(AuthError::LastAdmin);
    }
    Ok(())
}

/// Deletes an account and everything that hangs off it (sessions, reset tokens), and tells
/// `auth.user.deleted.v1`; false when there was no such account. The caller checks
/// `ensure_other_admin` first, in the same transaction.
pub async fn remove(conn: &mut PgConnection, user: Uuid) -> Result<bool, AuthError> {
    let done = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    let event = events::auth::UserDeleted {
        user_id: user,
        deleted_at: Utc::now(),
    };
    published::tell(conn, &event).await?;
    Ok(true)
}

/// Fails with `Escalation` when `target`'s role holds permissions the caller lacks: an account
/// may only change accounts no more powerful than itself. A missing target passes, so the
/// caller's own "not found" applies.
pub async fn ensure_can_manage(
    tx: &mut Transaction<'_, Postgres>,
    caller: &crate::authn::Principal,
    target: Uuid,
) -> Result<(), AuthError> {
    let covered: Option<bool> = sqlx::query_scalar(
        "SELECT r.permissions <@ $2::text[] FROM users u JOIN roles r ON r.id = u.role_id WHERE u.id = $1",
    )
    .bind(target)
    .bind(&caller.user.permissions)
    .fetch_optional(&mut **tx)
    .await?;
    match covered {
        Some(false) => Err(AuthError::Escalation),
        _ => Ok(()),
    }
}
