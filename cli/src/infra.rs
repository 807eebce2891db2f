//! PostgreSQL, Redis and the services' runtime base: which images they run, how to build those
//! images from Debian packages when no registry answers, and how to tell they really answer.

use std::time::Duration;

use sqlx::{postgres::PgConnectOptions, ConnectOptions as _, Connection as _};

use crate::{
    images::{Offline, OfflineRecipe},
    manifest::{ImageRef, Infra},
};

/// Where PostgreSQL keeps its data: a subdirectory of the volume, so that an initialisation
/// cut short never leaves a half-made cluster where a real one is expected.
pub const PGDATA: &str = "/var/lib/postgresql/data/pgdata";
pub const PG_VOLUME_PATH: &str = "/var/lib/postgresql/data";
pub const REDIS_VOLUME_PATH: &str = "/data";

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

/// PostgreSQL's image as asked for, and its offline stand-in when Debian packages it.
pub fn postgres_images(infra: &Infra) -> (ImageRef, Option<Offline>) {
    let wanted = infra.image.clone();
    let major = infra.image.tag().split(['.', '-']).next().unwrap_or("");
    // Debian bookworm packages PostgreSQL 15; other versions need a registry or `docker load`.
    let offline = (major == "15").then(|| Offline {
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
                "install -d -o postgres -g postgres -m 0700 /var/lib/postgresql/data".to_owned(),
            ],
            changes: vec![
                "ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_owned(),
                format!("ENV PGDATA={PGDATA}"),
                "ENTRYPOINT [\"/usr/local/bin/docker-entrypoint.sh\"]".to_owned(),
                "CMD [\"postgres\"]".to_owned(),
                "EXPOSE 5432".to_owned(),
            ],
        },
    });
    (wanted, offline)
}

/// Redis's image as asked for, and its offline stand-in (Debian bookworm packages Redis 7).
pub fn redis_images(infra: &Infra) -> (ImageRef, Option<Offline>) {
    let major = infra.image.tag().split(['.', '-']).next().unwrap_or("");
    let offline = (major == "7").then(|| Offline {
        image: offline_ref("redis", "7"),
        recipe: OfflineRecipe {
            packages: vec!["redis-server".to_owned()],
            files: vec![],
            commands: vec!["install -d -o redis -g redis -m 0750 /data".to_owned()],
            changes: vec![
                "USER redis".to_owned(),
                "WORKDIR /data".to_owned(),
                "CMD [\"redis-server\"]".to_owned(),
                "EXPOSE 6379".to_owned(),
            ],
        },
    });
    (infra.image.clone(), offline)
}

/// The base image services' binaries run on: Debian bookworm, the same glibc they link.
pub fn runtime_images() -> (ImageRef, Offline) {
    let wanted = ImageRef::parse("debian:bookworm-slim", "latest")
        .unwrap_or_else(|_| offline_ref("runtime", "bookworm"));
    let offline = Offline {
        image: offline_ref("runtime", "bookworm"),
        recipe: OfflineRecipe {
            packages: vec!["ca-certificates".to_owned()],
            ..OfflineRecipe::default()
        },
    };
    (wanted, offline)
}

fn offline_ref(name: &str, tag: &str) -> ImageRef {
    // Both parts are constants made of valid characters.
    ImageRef::parse(&format!("gravity-offline/{name}:{tag}"), "latest")
        .unwrap_or_else(|e| unreachable!("constant image reference: {e}"))
}

/// The PostgreSQL command line: `postgres` and a `-c name=value` per setting.
pub fn postgres_command(infra: &Infra) -> Vec<String> {
    let mut cmd = vec!["postgres".to_owned()];
    for (k, v) in &infra.settings {
        cmd.push("-c".to_owned());
        cmd.push(format!("{k}={v}"));
    }
    cmd
}

/// The Redis command line: append-only persistence, reachable on the project network, and a
/// `--name value` per setting.
pub fn redis_command(infra: &Infra) -> Vec<String> {
    let mut cmd: Vec<String> = [
        "redis-server",
        "--appendonly",
        "yes",
        "--protected-mode",
        "no",
    ]
    .map(str::to_owned)
    .to_vec();
    for (k, v) in &infra.settings {
        cmd.push(format!("--{k}"));
        cmd.push(v.clone());
    }
    cmd
}

/// Docker health checks, the same in Gravity's containers and in an exported compose file.
pub fn postgres_healthcheck() -> Vec<String> {
    shell("pg_isready -q -h 127.0.0.1 -U postgres")
}

pub fn redis_healthcheck() -> Vec<String> {
    shell("redis-cli -h 127.0.0.1 ping | grep -q PONG")
}

/// An HTTP GET of `path` with nothing but bash (neither image ships curl).
pub fn http_healthcheck(port: u16, path: &str) -> Vec<String> {
    vec![
        "CMD".to_owned(),
        "bash".to_owned(),
        "-c".to_owned(),
        format!(
            "exec 3<>/dev/tcp/127.0.0.1/{port} && printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 2[0-9][0-9] '"
        ),
    ]
}

fn shell(cmd: &str) -> Vec<String> {
    vec!["CMD-SHELL".to_owned(), cmd.to_owned()]
}

/// Superuser connection options for PostgreSQL published on the host.
pub fn postgres_admin(port: u16, password: &str, database: &str) -> PgConnectOptions {
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
pub async fn postgres_answers(options: &PgConnectOptions) -> Result<bool, sqlx::Error> {
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

/// Whether Redis answers PING now.
pub async fn redis_answers(port: u16) -> bool {
    let attempt = tokio::time::timeout(Duration::from_secs(2), async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    matches!(attempt, Ok(Ok(pong)) if pong == "PONG")
}

/// Whether a service's health endpoint answers 2xx now.
pub async fn http_answers(client: &reqwest::Client, port: u16, path: &str) -> bool {
    match client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
    {
        Ok(resp) => resp.status().is_success(),
        Err(_) => false,
    }
}
