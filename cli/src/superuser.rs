//! `gravity create-superuser`: the first admin of the platform's auth service, created through
//! the auth crate's own library function against the auth service's database.

use service_kit::{password::PasswordHasher, Email, Password};

use crate::{
    database::{self, DatabaseError},
    project::{Project, ProjectError},
};

#[derive(Debug, thiserror::Error)]
pub enum SuperuserError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("gravity.toml has no service built from the `auth` crate with a database")]
    NoAuthService,
    #[error("an account with email {0} already exists; pick another email, or reset its password with POST /api/v1/forgot-password")]
    EmailTaken(String),
    #[error("hashing the password: {0}")]
    Hash(String),
    #[error("creating the admin: {0}")]
    Auth(String),
}

/// Creates an admin with `email` and `password`; returns its id.
pub async fn create_superuser(
    project: &Project,
    email: &Email,
    password: &Password,
) -> Result<String, SuperuserError> {
    let m = &project.manifest;
    let (name, db) = m
        .services
        .iter()
        .find_map(|(name, s)| {
            (s.crate_name == "auth")
                .then_some(s.database.as_ref().map(|db| (name, db)))
                .flatten()
        })
        .ok_or(SuperuserError::NoAuthService)?;
    let port = m
        .postgres
        .as_ref()
        .map(|p| p.port.get())
        .ok_or(SuperuserError::NoAuthService)?;
    let secrets = project.secrets()?;
    let options = database::service_options(port, db, secrets.role_password(db));
    // The schema must be there; applying pending migrations is idempotent.
    let migrator = database::migrator(&project.migrations_dir(name)).await?;
    database::migrate(&options, db, &migrator).await?;
    let pool = database::connect(&options, &format!("role {db}")).await?;
    let hasher = PasswordHasher::owasp().map_err(|e| SuperuserError::Hash(e.to_string()))?;
    let result = auth::accounts::create_superuser(&pool, &hasher, email, password).await;
    pool.close().await;
    match result {
        Ok(user) => Ok(user.id.to_string()),
        Err(auth::error::AuthError::EmailTaken) => {
            Err(SuperuserError::EmailTaken(email.to_string()))
        }
        Err(e) => Err(SuperuserError::Auth(e.to_string())),
    }
}
