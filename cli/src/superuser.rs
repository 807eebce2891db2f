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
    #[error("gravity.toml has no such service built from the `auth` crate with a database")]
    NoAuthService,
    #[error("several services are built from the auth crate ({0}); name one with --service")]
    Ambiguous(String),
    #[error("an account with email {0} already exists; pick another email, or reset its password with POST /api/v1/forgot-password")]
    EmailTaken(String),
    #[error("hashing the password: {0}")]
    Hash(String),
    #[error("creating the admin: {0}")]
    Auth(String),
}

/// Creates an admin with `email` and `password` in the auth service `service` (by default the
/// one named `auth`, or the only service built from the auth crate); returns its id.
pub async fn create_superuser(
    project: &Project,
    service: Option<&str>,
    email: &Email,
    password: &Password,
) -> Result<String, SuperuserError> {
    let m = &project.manifest;
    let candidates: Vec<_> = m
        .services
        .iter()
        .filter_map(|(name, s)| {
            (s.crate_name == "auth")
                .then_some(s.database.as_ref().map(|db| (name, db)))
                .flatten()
        })
        .collect();
    let chosen = match service {
        Some(wanted) => {
            project.service(wanted)?;
            candidates.iter().find(|(n, _)| n.as_str() == wanted)
        }
        None if candidates.len() == 1 => candidates.first(),
        // Several: the one named auth, or the user must say which.
        None => candidates.iter().find(|(n, _)| n.as_str() == "auth"),
    };
    let Some((name, db)) = chosen.copied() else {
        return Err(match (service, candidates.len()) {
            (_, 0) | (Some(_), _) => SuperuserError::NoAuthService,
            (None, _) => SuperuserError::Ambiguous(
                candidates
                    .iter()
                    .map(|(n, _)| n.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
        });
    };
    let port = m
        .database_server()
        .map(|(_, p)| p.port.get())
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
