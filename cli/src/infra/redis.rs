//! Redis: one ACL user per dependent service, allowed only the keys and Pub/Sub channels under
//! its own prefix (`<service>:`), and no dangerous commands; the default user needs the
//! platform's admin password.
//!
//! The users are written on Redis's command line (`--user NAME on #SHA256 ...`), with their
//! passwords as SHA-256 digests, so a container, a `docker inspect` and an exported compose
//! file all carry the same list and no password in clear. A new dependent therefore restarts
//! Redis once (its data is kept in the append-only file).

use std::time::Duration;

use futures_util::future::BoxFuture;
use sha2::{Digest as _, Sha256};

use super::{env_name, offline_ref, shell, Dependent, InfraError, Instance, Kind, Reach, Runtime};
use crate::{
    images::{Offline, OfflineRecipe},
    manifest::ImageRef,
    project::Secrets,
};

#[derive(Debug)]
pub struct Redis;

impl Kind for Redis {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn title(&self) -> &'static str {
        "Redis"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("redis", "7")
    }

    fn offline(&self, wanted: &ImageRef) -> Option<Offline> {
        // Debian bookworm packages Redis 7.
        (super::major(wanted) == "7").then(|| Offline {
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
        })
    }

    fn container_port(&self) -> u16 {
        6379
    }

    fn volume_path(&self) -> &'static str {
        "/data"
    }

    /// Append-only persistence, reachable on the platform's network, the users, and a
    /// `--name value` per setting.
    fn container(
        &self,
        instance: &Instance<'_>,
        dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Runtime {
        let mut cmd: Vec<String> = [
            "redis-server",
            "--appendonly",
            "yes",
            "--protected-mode",
            "no",
        ]
        .map(str::to_owned)
        .to_vec();
        let resource = instance.name.as_str();
        // Each argument after `--user` is one word of the directive.
        cmd.extend(
            [
                "--user",
                "default",
                "on",
                &digest(secrets.infra_admin(resource)),
                "~*",
                "&*",
                "+@all",
            ]
            .map(str::to_owned),
        );
        for d in dependents {
            let password = secrets.infra_user(resource, d.name.as_str());
            let service = d.name.as_str();
            cmd.extend([
                "--user".to_owned(),
                service.to_owned(),
                "on".to_owned(),
                digest(password),
                "resetchannels".to_owned(),
                format!("~{service}:*"),
                format!("&{service}:*"),
                "+@all".to_owned(),
                "-@dangerous".to_owned(),
            ]);
        }
        for (k, v) in &instance.infra.settings {
            cmd.push(format!("--{k}"));
            cmd.push(v.clone());
        }
        Runtime {
            env: Default::default(),
            cmd: Some(cmd),
            ..Runtime::default()
        }
    }

    /// Liveness only: an answer without a password (NOAUTH) is an answer.
    fn healthcheck(&self) -> Vec<String> {
        shell("redis-cli -h 127.0.0.1 ping 2>&1 | grep -q -e PONG -e NOAUTH")
    }

    fn env_for(
        &self,
        instance: &Instance<'_>,
        dependent: &Dependent<'_>,
        secrets: &Secrets,
    ) -> Vec<(String, String)> {
        let service = dependent.name.as_str();
        let password = secrets.infra_user(instance.name.as_str(), service);
        let url = format!(
            "redis://{service}:{password}@{}:{}/",
            instance.name,
            self.container_port()
        );
        let mut env = vec![
            ("REDIS_URL".to_owned(), url.clone()),
            ("REDIS_KEY_PREFIX".to_owned(), format!("{service}:")),
        ];
        if instance.name.as_str() != self.name() {
            env.push((format!("{}_URL", env_name(instance.name.as_str())), url));
        }
        env
    }

    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move {
            let admin = reach.secrets.infra_admin(reach.instance.name.as_str());
            let attempt = tokio::time::timeout(Duration::from_secs(2), async {
                let client = redis::Client::open(format!(
                    "redis://default:{admin}@127.0.0.1:{}/",
                    reach.port
                ))?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            })
            .await;
            match attempt {
                Ok(Ok(pong)) => Ok(pong == "PONG"),
                Ok(Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
                    Err(InfraError::WrongPassword {
                        title: self.title(),
                        who: "its default user".to_owned(),
                    })
                }
                _ => Ok(false),
            }
        })
    }
}

/// A password as Redis's ACL takes it hashed: `#` and its SHA-256 in hex.
fn digest(password: &str) -> String {
    let hash = Sha256::digest(password.as_bytes());
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("#{hex}")
}
