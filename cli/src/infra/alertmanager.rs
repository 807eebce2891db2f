//! Alertmanager: receives the alerts of the platform's Prometheus (every Prometheus instance
//! sends to every Alertmanager instance) and groups them; its UI and API are on its port, on
//! loopback. Optional: a platform without one still evaluates its rules (Prometheus's
//! `/alerts` shows them). With a `webhook_url` setting it posts each group of alerts there
//! (Alertmanager's webhook format); without, it only keeps them for people to see.
//!
//! The official image where a registry answers; built from Debian's `prometheus-alertmanager`
//! (0.25) where none does. Its configuration is written into `/etc/alertmanager` and
//! reloaded in place when it changes.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use serde_json::json;

use super::{
    http_healthcheck_any, http_ready, offline_ref, Dependent, InfraError, Instance, Kind, Reach,
    Runtime, RuntimeFile, Scrape,
};
use crate::{
    images::{Offline, OfflineRecipe},
    manifest::ImageRef,
    project::Secrets,
};

pub const NAME: &str = "alertmanager";
pub const PORT: u16 = 9093;
const DATA: &str = "/alertmanager";
const DIR: &str = "/etc/alertmanager";
const CONFIG: &str = "/etc/alertmanager/gravity.yml";

#[derive(Debug)]
pub struct Alertmanager;

impl Kind for Alertmanager {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Alertmanager"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("prom/alertmanager", "v0.25.0")
    }

    /// Debian bookworm packages 0.25.
    fn offline(&self, wanted: &ImageRef) -> Option<Offline> {
        (super::major(wanted).trim_start_matches('v') == "0").then(|| Offline {
            image: offline_ref("alertmanager", "0.25"),
            recipe: OfflineRecipe {
                packages: vec!["prometheus-alertmanager".to_owned()],
                files: vec![],
                commands: vec![
                    format!("install -d -o nobody -m 0755 {DATA}"),
                    format!("install -d -o nobody -m 0755 {DIR}"),
                    // The official image's program name, which an exported compose file runs.
                    "ln -s /usr/bin/prometheus-alertmanager /usr/local/bin/alertmanager".to_owned(),
                ],
                changes: vec![
                    "USER nobody".to_owned(),
                    "ENTRYPOINT [\"/usr/bin/prometheus-alertmanager\"]".to_owned(),
                    format!("EXPOSE {PORT}"),
                ],
            },
        })
    }

    fn container_port(&self) -> u16 {
        PORT
    }

    fn volume_path(&self) -> &'static str {
        DATA
    }

    fn ensure_secrets(
        &self,
        _instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &mut Secrets,
    ) -> bool {
        false
    }

    fn container(
        &self,
        instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &Secrets,
    ) -> Runtime {
        Runtime {
            env: BTreeMap::new(),
            cmd: Some(vec![
                format!("--config.file={CONFIG}"),
                format!("--storage.path={DATA}"),
                format!("--web.listen-address=:{PORT}"),
                // One instance: no gossip with peers.
                "--cluster.listen-address=".to_owned(),
            ]),
            files: vec![RuntimeFile {
                path: CONFIG.to_owned(),
                content: config(
                    instance
                        .infra
                        .settings
                        .get("webhook_url")
                        .map(String::as_str),
                ),
            }],
            program: Some("alertmanager"),
        }
    }

    fn healthcheck(&self) -> Vec<String> {
        http_healthcheck_any(PORT, "/-/ready")
    }

    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move { Ok(http_ready(reach.port, "/-/ready").await) })
    }

    fn scrape(&self) -> Vec<Scrape> {
        vec![Scrape::metrics(NAME, PORT)]
    }

    fn reload<'a>(
        &'a self,
        reach: Reach<'a>,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<(), InfraError>> {
        super::prometheus::post_reload(self.title(), reach, http)
    }
}

/// `alertmanager.yml`: every alert grouped by name and resource, sent to one receiver (the
/// webhook, when there is one).
fn config(webhook_url: Option<&str>) -> String {
    let mut receiver = json!({ "name": "gravity" });
    if let Some(url) = webhook_url {
        receiver["webhook_configs"] = json!([{ "url": url, "send_resolved": true }]);
    }
    let document = json!({
        "route": {
            "receiver": "gravity",
            "group_by": ["alertname", "resource"],
            "group_wait": "10s",
            "group_interval": "1m",
            "repeat_interval": "4h",
        },
        "receivers": [receiver],
    });
    let yaml = crate::yaml::to_string(&document, str::to_owned)
        .unwrap_or_else(|e| unreachable!("plain data serializes: {e}"));
    format!("# Written by Gravity from gravity.toml; rewritten by every `gravity up`.\n{yaml}")
}
