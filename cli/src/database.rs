//! Each service's own database and role, and its migrations.
//!
//! **Invariant:** a service's role owns its database and nothing else, and `PUBLIC` may not
//! connect to it, so one service cannot read another's data.

use std::{path::Path, time::Duration};

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    ConnectOptions as _, PgPool,
};

#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    #[error("PostgreSQL refused the password Gravity holds for {who}. If the service was added since the last `gravity up`, run `gravity up` to create its role; otherwise the data was made with other passwords: restore the platform's secrets file (.gravity/ next to gravity.toml) from a backup")]
    WrongPassword { who: String },
    #[error("role {role} is a PostgreSQL superuser; a service's database role must not be: rename the service's database in gravity.toml")]
    Superuser { role: String },
    #[error("PostgreSQL on 127.0.0.1:{port} cannot be reached ({detail}); run `gravity up` first")]
    Unreachable { port: u16, detail: String },
    #[error("creating database {database}: {source}")]
    Provision {
        database: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("reading migrations in {dir}: {detail}")]
    Source { dir: String, detail: String },
    #[error("migrating database {database}: {detail}")]
    Migrate { database: String, detail: String },
}

/// A one-connection pool, naming wrong passwords and unreachable servers for what they are.
pub async fn connect(options: &PgConnectOptions, who: &str) -> Result<PgPool, DatabaseError> {
    let port = options.get_port();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.clone())
        .await;
    match pool {
        Ok(pool) => Ok(pool),
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("28P01") => {
            Err(DatabaseError::WrongPassword {
                who: who.to_owned(),
            })
        }
        Err(e) => Err(DatabaseError::Unreachable {
            port,
            detail: e.to_string(),
        }),
    }
}

/// Quotes an identifier. Names reaching here were parsed as lowercase letters, digits, `_`
/// and `-`; quoting still doubles any `"` so no name can break out.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A literal; the passwords reaching here are letters and digits, quoting is belt and braces.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Creates `database` owned by a role of the same name with `password`, unless they exist;
/// keeps the role's password in step. Returns whether anything was created.
pub async fn provision(
    admin: &PgPool,
    database: &str,
    password: &str,
) -> Result<bool, DatabaseError> {
    let err = |source| DatabaseError::Provision {
        database: database.to_owned(),
        source,
    };
    let mut created = false;
    let role: Option<bool> = sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
        .bind(database)
        .fetch_optional(admin)
        .await
        .map_err(err)?;
    match role {
        Some(true) => {
            return Err(DatabaseError::Superuser {
                role: database.to_owned(),
            })
        }
        // The role exists: its password was set when Gravity created it, and sending it again
        // on every `up` would only put it in more statements the server could log.
        Some(false) => {}
        None => {
            // DDL takes no bind parameters; the name and password are quoted above.
            let sql = format!(
                "CREATE ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}",
                ident(database),
                literal(password)
            );
            match sqlx::raw_sql(&sql).execute(admin).await {
                Ok(_) => created = true,
                // Created meanwhile by a concurrent `gravity up`.
                Err(sqlx::Error::Database(e)) if created_meanwhile(&*e, "42710") => {}
                Err(e) => return Err(err(e)),
            }
        }
    }
    let db_exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(admin)
            .await
            .map_err(err)?;
    if !db_exists {
        let sql = format!(
            "CREATE DATABASE {} OWNER {}",
            ident(database),
            ident(database)
        );
        match sqlx::raw_sql(&sql).execute(admin).await {
            Ok(_) => created = true,
            Err(sqlx::Error::Database(e)) if created_meanwhile(&*e, "42P04") => {}
            Err(e) => return Err(err(e)),
        }
    }
    let revoke = format!("REVOKE ALL ON DATABASE {} FROM PUBLIC", ident(database));
    // Two sessions changing one database's privileges at once: the later fails with "tuple
    // concurrently updated" (XX000) and succeeds when run again.
    let mut tries = 0;
    loop {
        match sqlx::raw_sql(&revoke).execute(admin).await {
            Ok(_) => break,
            Err(sqlx::Error::Database(e))
                if tries < 5
                    && e.code().as_deref() == Some("XX000")
                    && e.message().contains("concurrently updated") =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(20 * tries)).await;
            }
            Err(e) => return Err(err(e)),
        }
    }
    Ok(created)
}

/// Whether a CREATE failed only because another session created the same object: PostgreSQL
/// says so with `duplicate` (`42710` for roles, `42P04` for databases) when the other one had
/// committed before the check, and with a unique violation on its catalog (`23505`) when
/// both were inserting at once (an interrupted `gravity up` still running its CREATE while
/// the next one starts).
fn created_meanwhile(e: &dyn sqlx::error::DatabaseError, duplicate: &str) -> bool {
    matches!(e.code().as_deref(), Some(code) if code == duplicate || code == "23505")
}

/// Connection options for a service's role on its own database, through the host port.
pub fn service_options(port: u16, database: &str, password: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username(database)
        .password(password)
        .database(database)
        .disable_statement_logging()
}

/// Reads the migrations in `dir` (sqlx's format).
pub async fn migrator(dir: &Path) -> Result<Migrator, DatabaseError> {
    Migrator::new(dir.to_path_buf())
        .await
        .map_err(|e| DatabaseError::Source {
            dir: dir.display().to_string(),
            detail: e.to_string(),
        })
}

/// Applies pending migrations as the service's role (so it owns what they create); returns
/// how many were applied.
pub async fn migrate(
    options: &PgConnectOptions,
    database: &str,
    migrator: &Migrator,
) -> Result<usize, DatabaseError> {
    let fail = |detail: String| DatabaseError::Migrate {
        database: database.to_owned(),
        detail,
    };
    let before = status(options, database, migrator).await?;
    let pending = before.iter().filter(|m| !m.applied).count();
    if pending == 0 {
        return Ok(0);
    }
    let pool = connect(options, &format!("role {database}")).await?;
    let result = migrator.run(&pool).await;
    pool.close().await;
    result.map_err(|e| fail(e.to_string()))?;
    Ok(pending)
}

/// One migration and whether it is applied.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub description: String,
    pub applied: bool,
    /// Applied, but the file changed since.
    pub changed: bool,
}

/// Every migration in `migrator`, and which are applied.
pub async fn status(
    options: &PgConnectOptions,
    database: &str,
    migrator: &Migrator,
) -> Result<Vec<MigrationStatus>, DatabaseError> {
    let fail = |detail: String| DatabaseError::Migrate {
        database: database.to_owned(),
        detail,
    };
    let pool = connect(options, &format!("role {database}")).await?;
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&pool)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let applied: Vec<(i64, Vec<u8>)> = if exists {
        sqlx::query_as(
            "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&pool)
        .await
        .map_err(|e| fail(e.to_string()))?
    } else {
        Vec::new()
    };
    pool.close().await;
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| {
            let done = applied.iter().find(|(v, _)| *v == m.version);
            MigrationStatus {
                version: m.version,
                description: m.description.to_string(),
                applied: done.is_some(),
                changed: done.is_some_and(|(_, sum)| sum[..] != m.checksum[..]),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs `TEST_DATABASE_URL`: a role that may create roles and databases.
    #[tokio::test]
    async fn concurrent_provisioning_of_one_database_all_succeed() {
        let url = std::env::var("TEST_DATABASE_URL")
            .expect("TEST_DATABASE_URL (scripts/dev-deps.sh prints it)");
        let admin = PgPool::connect(&url).await.unwrap();
        let name = format!("race_{}", uuid::Uuid::new_v4().simple());
        // The test's role is no superuser (gravity's admin is): to create a database owned by
        // the service's role it must be a member of it, so the role comes first here and
        // the race is the databases'.
        sqlx::raw_sql(&format!(
            "CREATE ROLE {name} LOGIN PASSWORD 'secret1234'; GRANT {name} TO CURRENT_USER"
        ))
        .execute(&admin)
        .await
        .unwrap();
        let attempts = (0..6).map(|_| provision(&admin, &name, "secret1234"));
        let results = futures_util::future::join_all(attempts).await;
        let created = results.iter().filter(|r| matches!(r, Ok(true))).count();
        let failures: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        // Clean up before asserting.
        sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {}", ident(&name)))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::raw_sql(&format!("DROP ROLE IF EXISTS {}", ident(&name)))
            .execute(&admin)
            .await
            .unwrap();
        assert!(failures.is_empty(), "{failures:?}");
        assert!(created >= 1);
    }
}
