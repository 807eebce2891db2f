//! PostgreSQL: each service that has a `database` gets its own role owning its own database,
//! with `PUBLIC` refused, and its migrations applied as that role.

use std::{collections::BTreeMap, time::Duration};

use futures_util::future::BoxFuture;
use sqlx::{postgres::PgConnectOptions, ConnectOptions as _, Connection as _};

use super::{offline_ref, shell, Dependent, InfraError, InitJob, Instance, Kind, Reach, Runtime};
use crate::{
    database::{self, DatabaseError},
    images::{Offline, OfflineRecipe},
    manifest::{ImageRef, ServiceSpec},
    progress::Task,
    project::Secrets,
};

/// Where PostgreSQL keeps its data: a subdirectory of the volume, so that an initialisation
/// cut short never leaves a half-made cluster where a real one is expected.
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
pub const PG_VOLUME_PATH: &str = "/var/lib/postgresql/data";

/// The official image's contract (`POSTGRES_PASSWORD`, `POSTGRES_USER`, `PGDATA`, a `postgres
/// -c name=value` command) on Debian's packages. Written here because Debian's packaging
/// expects systemd and `pg_ctlcluster`, which a container has no use for.
const PG_ENTRYPOINT: &str = r#"#!/bin/sh
set -eu
bin=/usr/lib/postgresql/15/bin
data="${PGDATA:-/var/lib/postgresql/data/pgdata}"
if [ "${1:-}" = postgres ]; then shift; fi
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$(dirname "$data")" /var/run/postgresql
  chown postgres:postgres "$(dirname "$data")" /var/run/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" postgres "$@"
fi
if [ ! -s "$data/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "POSTGRES_PASSWORD must be set to initialise the database" >&2
    exit 1
  fi
  rm -rf "$data.init"
  pwfile="$(mktemp)"
  printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
  "$bin/initdb" -D "$data.init" -U "${POSTGRES_USER:-postgres}" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  echo "host all all all scram-sha-256" >> "$data.init/pg_hba.conf"
  mv "$data.init" "$data"
fi
exec "$bin/postgres" -D "$data" -c listen_addresses='*' "$@"
"#;

/// PostgreSQL. Its secrets keep the layout they always had (`postgres_password`, `roles`),
/// so platforms made before infrastructure became data keep their passwords.
#[derive(Debug)]
pub struct Postgres;

pub const NAME: &str = "postgres";

impl Kind for Postgres {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "PostgreSQL"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("postgres", "15")
    }

    fn offline(&self, wanted: &ImageRef) -> Option<Offline> {
        // Debian bookworm packages PostgreSQL 15; other versions need a registry or `docker load`.
        (super::major(wanted) == "15").then(|| Offline {
            image: offline_ref("postgres", "15"),
            recipe: OfflineRecipe {
                packages: vec!["postgresql-15".to_owned()],
                files: vec![(
                    "/usr/local/bin/docker-entrypoint.sh".to_owned(),
                    PG_ENTRYPOINT.to_owned(),
                    0o755,
                )],
                commands: vec![
                    // The package's postinst made a cluster in Debian's layout; the entrypoint
                    // makes its own in the volume.
                    "rm -rf /var/lib/postgresql/15 /etc/postgresql/15".to_owned(),
                    "install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data"
                        .to_owned(),
                ],
                changes: vec![
                    "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                    format!("ENV PGDATA={PGDATA}"),
                    "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]".to_owned(),
                    "CMD [\"postgres\"]".to_owned(),
                    "EXPOSE 5432".to_owned(),
                ],
            },
        })
    }

    fn container_port(&self) -> u16 {
        5432
    }

    fn volume_path(&self) -> &'static str {
        PG_VOLUME_PATH
    }

    /// A service with a `database` uses PostgreSQL whether or not it lists it.
    fn serves(&self, instance: &Instance<'_>, spec: &ServiceSpec) -> bool {
        spec.database.is_some() || spec.depends_on.iter().any(|d| d == instance.name)
    }

    fn ensure_secrets(
        &self,
        _instance: &Instance<'_>,
        dependents: &[Dependent<'_>],
        secrets: &mut Secrets,
    ) -> bool {
        let mut changed = false;
        if secrets.postgres_password.is_empty() {
            secrets.postgres_password = crate::project::random_password();
            changed = true;
        }
        for d in dependents {
            if let Some(db) = &d.spec.database {
                if !secrets.roles.contains_key(db) {
                    secrets
                        .roles
                        .insert(db.clone(), crate::project::random_password());
                    changed = true;
                }
            }
        }
        changed
    }

    fn container(
        &self,
        instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Runtime {
        let mut cmd = vec!["postgres".to_owned()];
        for (k, v) in &instance.infra.settings {
            cmd.push("-c".to_owned());
            cmd.push(format!("{k}={v}"));
        }
        Runtime {
            env: BTreeMap::from([
                (
                    "POSTGRES_PASSWORD".to_owned(),
                    secrets.postgres_password.clone(),
                ),
                ("POSTGRES_USER".to_owned(), "postgres".to_owned()),
                ("PGDATA".to_owned(), PGDATA.to_owned()),
            ]),
            cmd: Some(cmd),
            ..Runtime::default()
        }
    }

    fn healthcheck(&self) -> Vec<String> {
        shell("pg_isready -q -h 127.0.0.1 -U postgres")
    }

    fn env_for(
        &self,
        instance: &Instance<'_>,
        dependent: &Dependent<'_>,
        secrets: &Secrets,
    ) -> Vec<(String, String)> {
        let Some(db) = &dependent.spec.database else {
            return Vec::new();
        };
        let password = secrets.role_password(db);
        vec![(
            "DATABASE_URL".to_owned(),
            format!(
                "postgres://{db}:{password}@{}:{}/{db}",
                instance.name,
                self.container_port()
            ),
        )]
    }

    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move {
            let options = admin_options(reach.port, &reach.secrets.postgres_password, "postgres");
            postgres_answers(&options).await.map_err(|_| {
                InfraError::Database(DatabaseError::WrongPassword {
                    who: "the postgres superuser".to_owned(),
                })
            })
        })
    }

    fn provision<'a>(
        &'a self,
        reach: Reach<'a>,
        dependent: Dependent<'a>,
        task: &'a Task,
    ) -> BoxFuture<'a, Result<Vec<String>, InfraError>> {
        Box::pin(async move {
            let Some(db) = &dependent.spec.database else {
                return Ok(Vec::new());
            };
            let admin = admin_options(reach.port, &reach.secrets.postgres_password, "postgres");
            task.message(format!("creating database {db}"));
            let password = reach.secrets.role_password(db).to_owned();
            let pool = database::connect(&admin, "the postgres superuser").await?;
            let provisioned = database::provision(&pool, db, &password).await;
            pool.close().await;
            provisioned?;
            let mut notes = Vec::new();
            if dependent.migrations.is_dir() {
                task.message("applying migrations");
                let migrator = database::migrator(&dependent.migrations).await?;
                let options = database::service_options(reach.port, db, &password);
                let applied = database::migrate(&options, db, &migrator).await?;
                if applied > 0 {
                    notes.push(format!("applied {applied} migration(s) to {db}"));
                }
            }
            Ok(notes)
        })
    }

    /// Compose cannot create each service's database and role, so a one-shot `psql` does;
    /// the services apply their own migrations on start there.
    fn compose_init(
        &self,
        instance: &Instance<'_>,
        dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Option<InitJob> {
        let mut sql = String::new();
        for d in dependents {
            if let Some(db) = &d.spec.database {
                let pw = secrets.role_password(db);
                sql.push_str(&format!(
                    "SELECT 'CREATE ROLE \"{db}\" LOGIN PASSWORD ''{pw}''' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{db}')\\gexec\n\
                     SELECT 'CREATE DATABASE \"{db}\" OWNER \"{db}\"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{db}')\\gexec\n\
                     REVOKE ALL ON DATABASE \"{db}\" FROM PUBLIC;\n"
                ));
            }
        }
        if sql.is_empty() {
            return None;
        }
        Some(InitJob {
            entrypoint: vec![
                "sh".to_owned(),
                "-ec".to_owned(),
                format!(
                    "psql -q -v ON_ERROR_STOP=1 -h {} -U postgres -d postgres <<'SQL'\n{sql}SQL\n",
                    instance.name
                ),
            ],
            env: BTreeMap::from([("PGPASSWORD".to_owned(), secrets.postgres_password.clone())]),
        })
    }
}

/// Superuser connection options for PostgreSQL published on the host.
pub fn admin_options(port: u16, password: &str, database: &str) -> PgConnectOptions {
    PgConnectOptions::new()
        .host("127.0.0.1")
        .port(port)
        .username("postgres")
        .password(password)
        .database(database)
        .disable_statement_logging()
}

/// Whether PostgreSQL answers a query now. An authentication failure is returned as an
/// error: waiting will not fix it.
async fn postgres_answers(options: &PgConnectOptions) -> Result<bool, sqlx::Error> {
    let attempt = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = sqlx::PgConnection::connect_with(options).await?;
        sqlx::query("SELECT 1").execute(&mut conn).await?;
        let _ = conn.close().await;
        Ok::<_, sqlx::Error>(())
    })
    .await;
    match attempt {
        Ok(Ok(())) => Ok(true),
        Ok(Err(sqlx::Error::Database(e))) if e.code().as_deref() == Some("28P01") => {
            Err(sqlx::Error::Database(e))
        }
        _ => Ok(false),
    }
}
