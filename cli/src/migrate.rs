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
    #[error("a migration with version {0} exists already (versions are seconds); wait a second and run it again")]
    SameVersion(String),
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
        .database_server()
        .map(|(_, p)| p.port.get())
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
    let version = now.format("%Y%m%d%H%M%S").to_string();
    let taken = std::fs::read_dir(&dir)
        .map_err(|e| write_err(&dir, e))?
        .filter_map(Result::ok)
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{version}_"))
        });
    if taken {
        return Err(MigrateError::SameVersion(version));
    }
    let path = dir.join(format!("{version}_{name}.sql"));
    let body = format!(
        "-- {name}: applied by `gravity up` or `gravity migrate {service}`, once, in a transaction.\n"
    );
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    let mut file = options.open(&path).map_err(|e| write_err(&path, e))?;
    std::io::Write::write_all(&mut file, body.as_bytes()).map_err(|e| write_err(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project(dir: &std::path::Path) -> Project {
        std::fs::create_dir_all(dir).unwrap();
        let file = dir.join("gravity.toml");
        std::fs::write(
            &file,
            "[platform]\nname = \"unit\"\n[infrastructure.postgres]\nimage = \"postgres\"\nversion = \"15\"\nport = 15432\n[services.shop]\nport = 18000\ndatabase = \"shop\"\n[services.static-site]\nport = 18001\n",
        )
        .unwrap();
        Project::load(&file).unwrap()
    }

    #[test]
    fn new_migrations_are_timestamped_and_never_overwrite() {
        let dir = std::env::temp_dir().join(format!("gravity-migrate-{}", uuid::Uuid::new_v4()));
        let p = project(&dir);
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T10:20:30Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let path = new_migration(&p, "shop", "add_orders", now).unwrap();
        assert_eq!(
            path,
            dir.join("migrations/shop/20261125102030_add_orders.sql")
        );
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .starts_with("-- add_orders"));
        std::fs::write(&path, "CREATE TABLE orders ();\n").unwrap();
        let again = new_migration(&p, "shop", "add_orders", now);
        assert!(
            matches!(again, Err(MigrateError::SameVersion(_))),
            "{again:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "CREATE TABLE orders ();\n",
            "an existing file is never overwritten"
        );
        let next = new_migration(&p, "shop", "add_orders", now + chrono::Duration::seconds(1));
        assert!(next.is_ok(), "{next:?}");
        assert!(matches!(
            new_migration(&p, "shop", "Add Orders", now),
            Err(MigrateError::BadName(_))
        ));
        assert!(matches!(
            new_migration(&p, "static-site", "x", now),
            Err(MigrateError::NoDatabase(_))
        ));
        assert!(matches!(
            new_migration(&p, "shpo", "x", now),
            Err(MigrateError::Project(ProjectError::UnknownService { .. }))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
