//! `gravity migrate`: apply or list each service's migrations, and write new ones.

use std::path::PathBuf;

use crate::{
    database::{self, DatabaseError, MigrationStatus},
    manifest::ServiceName,
    project::{Project, ProjectError},
};

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("service {0} has no database in gravity.toml, so it has no migrations")]
    NoDatabase(String),
    #[error("the platform has no PostgreSQL in gravity.toml")]
    NoPostgres,
    #[error("{0:?} is not a migration name: use lowercase letters, digits and underscores (e.g. add_orders_table)")]
    BadName(String),
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
}

/// One service's migrations.
#[derive(Debug, serde::Serialize)]
pub struct ServiceMigrations {
    pub service: String,
    pub database: String,
    /// How many were applied by this run (0 with `--status`).
    pub applied_now: usize,
    pub migrations: Vec<MigrationStatus>,
}

/// The services with a database, or just `only`.
fn targets(
    project: &Project,
    only: Option<&str>,
) -> Result<Vec<(ServiceName, String)>, MigrateError> {
    match only {
        Some(name) => {
            let (name, spec) = project.service(name)?;
            let db = spec
                .database
                .clone()
                .ok_or_else(|| MigrateError::NoDatabase(name.to_string()))?;
            Ok(vec![(name.clone(), db)])
        }
        None => Ok(project
            .manifest
            .services
            .iter()
            .filter_map(|(n, s)| s.database.clone().map(|db| (n.clone(), db)))
            .collect()),
    }
}

/// Applies pending migrations (unless `status_only`) and reports each service's.
pub async fn migrate(
    project: &Project,
    only: Option<&str>,
    status_only: bool,
) -> Result<Vec<ServiceMigrations>, MigrateError> {
    let port = project
        .manifest
        .postgres
        .as_ref()
        .map(|p| p.port.get())
        .ok_or(MigrateError::NoPostgres)?;
    let secrets = project.secrets()?;
    let mut out = Vec::new();
    for (service, db) in targets(project, only)? {
        let options = database::service_options(port, &db, secrets.role_password(&db));
        let dir = project.migrations_dir(&service);
        let migrator = database::migrator(&dir).await?;
        let applied_now = if status_only {
            0
        } else {
            database::migrate(&options, &db, &migrator).await?
        };
        let migrations = database::status(&options, &db, &migrator).await?;
        out.push(ServiceMigrations {
            service: service.to_string(),
            database: db,
            applied_now,
            migrations,
        });
    }
    Ok(out)
}

/// Writes `migrations/SERVICE/<UTC timestamp>_<name>.sql`; never overwrites a file.
pub fn new_migration(
    project: &Project,
    service: &str,
    name: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<PathBuf, MigrateError> {
    let (service, spec) = project.service(service)?;
    if spec.database.is_none() {
        return Err(MigrateError::NoDatabase(service.to_string()));
    }
    let ok = !name.is_empty()
        && name.len() <= 100
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(MigrateError::BadName(name.to_owned()));
    }
    let dir = project.migrations_dir(service);
    let write_err = |path: &std::path::Path, error| MigrateError::Write {
        path: path.display().to_string(),
        error,
    };
    std::fs::create_dir_all(&dir).map_err(|e| write_err(&dir, e))?;
    let path = dir.join(format!("{}_{name}.sql", now.format("%Y%m%d%H%M%S")));
    let body = format!(
        "-- {name}: applied by `gravity up` or `gravity migrate {service}`, once, in a transaction.\n"
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let mut file = options.open(&path).map_err(|e| write_err(&path, e))?;
    std::io::Write::write_all(&mut file, body.as_bytes()).map_err(|e| write_err(&path, e))?;
    Ok(path)
}
