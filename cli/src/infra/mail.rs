//! The mail catcher: an SMTP server that keeps every message the platform sends instead of
//! delivering it, so a developer sees each one (`gravity mail`). Mailpit where a registry
//! serves it; where none does, Gravity's own catcher (`mail_catcher.py`, on Debian's
//! python3-aiosmtpd), which answers the part of Mailpit's HTTP API that `gravity mail` reads.
//!
//! Dependent services get `SMTP_URL`. Nothing leaves the machine: the catcher relays nothing.

use std::{collections::BTreeMap, time::Duration};

use futures_util::future::BoxFuture;
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncReadExt as _;

use super::{env_name, offline_ref, Dependent, InfraError, Instance, Kind, Reach, Runtime, Ui};
use crate::{
    images::{Offline, OfflineRecipe},
    manifest::ImageRef,
    project::Secrets,
};

pub const NAME: &str = "mail";
const SMTP_PORT: u16 = 1025;
const HTTP_PORT: u16 = 8025;
const DATA: &str = "/data";
const CATCHER: &str = include_str!("mail_catcher.py");

#[derive(Debug)]
pub struct Mail;

impl Kind for Mail {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Mail catcher"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("axllent/mailpit", "v1.21")
    }

    /// Any version: the stand-in answers what `gravity mail` asks of every Mailpit. Its tag
    /// carries a digest of the catcher's script, so a changed script is a new image rather
    /// than a cached old one.
    fn offline(&self, _wanted: &ImageRef) -> Option<Offline> {
        let digest = Sha256::digest(CATCHER.as_bytes());
        let short: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
        Some(Offline {
            image: offline_ref("mail-catcher", &format!("1-{short}")),
            recipe: OfflineRecipe {
                packages: vec!["python3-aiosmtpd".to_owned()],
                files: vec![(
                    "/usr/local/bin/gravity-mail-catcher".to_owned(),
                    CATCHER.to_owned(),
                    0o755,
                )],
                commands: vec![format!("install -d -m 0777 {DATA}")],
                changes: vec![
                    format!("ENV MAIL_DIR={DATA}"),
                    "CMD [\"/usr/bin/python3\", \"/usr/local/bin/gravity-mail-catcher\"]"
                        .to_owned(),
                    format!("EXPOSE {SMTP_PORT} {HTTP_PORT}"),
                ],
            },
        })
    }

    fn container_port(&self) -> u16 {
        SMTP_PORT
    }

    fn ui(&self) -> Option<Ui> {
        Some(Ui {
            port: HTTP_PORT,
            what: "mail viewer",
        })
    }

    fn volume_path(&self) -> &'static str {
        DATA
    }

    /// Mailpit keeps its messages in a database file under the volume; the stand-in keeps
    /// each as a file there. Both accept any sender without credentials.
    fn container(
        &self,
        _instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &Secrets,
    ) -> Runtime {
        Runtime {
            env: BTreeMap::from([
                ("MP_DATABASE".to_owned(), format!("{DATA}/mailpit.db")),
                ("MP_SMTP_AUTH_ACCEPT_ANY".to_owned(), "1".to_owned()),
                ("MP_SMTP_AUTH_ALLOW_INSECURE".to_owned(), "1".to_owned()),
                ("MAIL_DIR".to_owned(), DATA.to_owned()),
            ]),
            cmd: None,
            ..Runtime::default()
        }
    }

    /// Mailpit answers its own `readyz`; the stand-in (which has no Mailpit binary) is asked
    /// for its SMTP greeting with the Python it runs on.
    fn healthcheck(&self) -> Vec<String> {
        vec![
            "CMD-SHELL".to_owned(),
            format!(
                "/mailpit readyz >/dev/null 2>&1 || /usr/bin/python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', {SMTP_PORT}), 3); s.settimeout(3); assert s.recv(3) == b'220'\""
            ),
        ]
    }

    fn env_for(
        &self,
        instance: &Instance<'_>,
        _dependent: &Dependent<'_>,
        _secrets: &Secrets,
    ) -> Vec<(String, String)> {
        let url = format!("smtp://{}:{SMTP_PORT}", instance.name);
        let mut env = vec![("SMTP_URL".to_owned(), url.clone())];
        if instance.name.as_str() != NAME {
            env.push((
                format!("{}_SMTP_URL", env_name(instance.name.as_str())),
                url,
            ));
        }
        env
    }

    /// Its SMTP greeting (`220`) on the published port.
    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move {
            let greeting = tokio::time::timeout(Duration::from_secs(2), async {
                let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", reach.port)).await?;
                let mut code = [0u8; 3];
                stream.read_exact(&mut code).await?;
                Ok::<_, std::io::Error>(code)
            })
            .await;
            Ok(matches!(greeting, Ok(Ok(code)) if &code == b"220"))
        })
    }
}
