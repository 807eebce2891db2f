//! Prometheus: scrapes the whole platform. Its targets are written from gravity.toml, never
//! by hand: every service's `/metrics`, the gateway's admin listener, and every instance
//! whose kind serves metrics ([`Kind::scrape`]: RabbitMQ's Prometheus plugin, per queue too,
//! and the PostgreSQL and Redis exporters). Gravity's recording and alerting rules
//! (`prometheus_rules.yml`) are loaded with them.
//!
//! The official image where a registry answers; built from Debian's `prometheus` (2.42)
//! where none does. Both start `prometheus` with the flags of [`Prometheus::container`], and
//! its two files are written into `/etc/prometheus` before it starts: a platform that gains
//! a service has them rewritten in the running container and reloaded (`POST /-/reload`),
//! without a restart and without losing its data. Its UI and API are on its port, on
//! loopback.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use serde::Serialize;

use super::{
    env_name, http_healthcheck_any, http_ready, offline_ref, Dependent, InfraError, Instance, Kind,
    Reach, Runtime, RuntimeFile, Scrape,
};
use crate::{
    images::{Offline, OfflineRecipe},
    manifest::{ImageRef, Manifest},
    project::Secrets,
};

pub const NAME: &str = "prometheus";
pub const PORT: u16 = 9090;
const DATA: &str = "/prometheus";
const DIR: &str = "/etc/prometheus";
const CONFIG_FILE: &str = "gravity.yml";
const RULES_FILE: &str = "gravity-rules.yml";
/// Gravity's recording and alerting rules, as shipped.
pub const RULES: &str = include_str!("prometheus_rules.yml");
/// How often targets are scraped and rules evaluated: a development platform wants to see a
/// change within seconds.
const INTERVAL: &str = "5s";

#[derive(Debug)]
pub struct Prometheus;

impl Kind for Prometheus {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Prometheus"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("prom/prometheus", "v2.42.0")
    }

    /// Debian bookworm packages Prometheus 2.42; the 2.x configuration Gravity writes is the
    /// same for every 2.x.
    fn offline(&self, wanted: &ImageRef) -> Option<Offline> {
        (super::major(wanted).trim_start_matches('v') == "2").then(|| Offline {
            image: offline_ref("prometheus", "2.42"),
            recipe: OfflineRecipe {
                packages: vec!["prometheus".to_owned()],
                files: vec![],
                commands: vec![
                    format!("install -d -o prometheus -g prometheus -m 0755 {DATA}"),
                    // An exported compose file writes the configuration as the process's user.
                    format!("chown prometheus:prometheus {DIR}"),
                ],
                changes: vec![
                    "USER prometheus".to_owned(),
                    "ENTRYPOINT [\"/usr/bin/prometheus\"]".to_owned(),
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

    /// It holds no password.
    fn ensure_secrets(
        &self,
        _instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &mut Secrets,
    ) -> bool {
        false
    }

    /// Its configuration and rules from the platform; settings become flags
    /// (`retention = "2d"` → `--storage.tsdb.retention.time`, any other `name = value` →
    /// `--name=value`).
    fn container(
        &self,
        instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &Secrets,
    ) -> Runtime {
        let mut flags = BTreeMap::from([
            ("config.file".to_owned(), format!("{DIR}/{CONFIG_FILE}")),
            ("storage.tsdb.path".to_owned(), DATA.to_owned()),
            ("storage.tsdb.retention.time".to_owned(), "7d".to_owned()),
            ("web.listen-address".to_owned(), format!(":{PORT}")),
        ]);
        for (k, v) in &instance.infra.settings {
            let key = if k == "retention" {
                "storage.tsdb.retention.time"
            } else {
                k.as_str()
            };
            flags.insert(key.to_owned(), v.clone());
        }
        let mut cmd: Vec<String> = flags
            .into_iter()
            .map(|(k, v)| format!("--{k}={v}"))
            .collect();
        // Lets Gravity reload the rewritten configuration.
        cmd.push("--web.enable-lifecycle".to_owned());
        Runtime {
            env: BTreeMap::new(),
            cmd: Some(cmd),
            files: vec![
                RuntimeFile {
                    path: format!("{DIR}/{CONFIG_FILE}"),
                    content: config(instance.platform),
                },
                RuntimeFile {
                    path: format!("{DIR}/{RULES_FILE}"),
                    content: RULES.to_owned(),
                },
            ],
            program: Some("prometheus"),
        }
    }

    fn healthcheck(&self) -> Vec<String> {
        http_healthcheck_any(PORT, "/-/ready")
    }

    fn env_for(
        &self,
        instance: &Instance<'_>,
        _dependent: &Dependent<'_>,
        _secrets: &Secrets,
    ) -> Vec<(String, String)> {
        let url = format!("http://{}:{PORT}", instance.name);
        vec![
            ("PROMETHEUS_URL".to_owned(), url.clone()),
            (format!("{}_URL", env_name(instance.name.as_str())), url),
        ]
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
        post_reload(self.title(), reach, http)
    }
}

/// `POST /-/reload`, as Prometheus and Alertmanager both take it: they reread their
/// configuration, or refuse it and keep the one they run.
pub(super) fn post_reload<'a>(
    title: &'static str,
    reach: Reach<'a>,
    http: &'a reqwest::Client,
) -> BoxFuture<'a, Result<(), InfraError>> {
    Box::pin(async move {
        let failed = |detail: String| InfraError::Request {
            title,
            port: reach.port,
            detail,
        };
        let response = http
            .post(format!("http://127.0.0.1:{}/-/reload", reach.port))
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| failed(format!("reloading its configuration: {e}")))?;
        if response.status().is_success() {
            return Ok(());
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        Err(failed(format!(
            "it refused the rewritten configuration ({status}): {}",
            body.trim()
        )))
    })
}

/// `prometheus.yml` for a platform: one job per kind of target, and every Alertmanager of
/// the platform alerted.
pub fn config(platform: &Manifest) -> String {
    #[derive(Serialize)]
    struct File {
        global: Global,
        #[serde(skip_serializing_if = "Option::is_none")]
        alerting: Option<serde_json::Value>,
        rule_files: Vec<&'static str>,
        scrape_configs: Vec<Job>,
    }
    #[derive(Serialize)]
    struct Global {
        scrape_interval: &'static str,
        evaluation_interval: &'static str,
        external_labels: BTreeMap<&'static str, String>,
    }
    #[derive(Serialize)]
    struct Job {
        job_name: String,
        metrics_path: &'static str,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        params: BTreeMap<&'static str, Vec<&'static str>>,
        static_configs: Vec<Targets>,
    }
    #[derive(Serialize)]
    struct Targets {
        targets: Vec<String>,
        labels: BTreeMap<&'static str, String>,
    }
    let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
    let mut add = |job: &str,
                   path: &'static str,
                   params: &[(&'static str, &'static str)],
                   target: String,
                   resource: &str| {
        let entry = jobs.entry(job.to_owned()).or_insert_with(|| Job {
            job_name: job.to_owned(),
            metrics_path: path,
            params: BTreeMap::new(),
            static_configs: Vec::new(),
        });
        for (k, v) in params {
            entry.params.entry(*k).or_default().push(*v);
        }
        entry.static_configs.push(Targets {
            targets: vec![target],
            labels: BTreeMap::from([("resource", resource.to_owned())]),
        });
    };
    for (name, spec) in &platform.services {
        if crate::gateway::is_gateway(spec) {
            // The gateway's metrics are on its admin listener, open to the platform's network.
            let target = format!("{name}:{}", crate::gateway::ADMIN_PORT);
            add("gateway", "/metrics", &[], target, name.as_str());
        } else {
            let target = format!("{name}:{}", spec.port.get());
            add("services", "/metrics", &[], target, name.as_str());
        }
    }
    for (name, infra) in &platform.infrastructure {
        for scrape in infra.kind.scrape() {
            let target = format!("{name}:{}", scrape.port);
            add(
                scrape.job,
                scrape.path,
                &scrape.params,
                target,
                name.as_str(),
            );
        }
    }
    let alertmanagers: Vec<String> = platform
        .infrastructure
        .iter()
        .filter(|(_, i)| i.kind.name() == super::alertmanager::NAME)
        .map(|(name, _)| format!("{name}:{}", super::alertmanager::PORT))
        .collect();
    let file = File {
        alerting: (!alertmanagers.is_empty()).then(|| {
            serde_json::json!({
                "alertmanagers": [{ "static_configs": [{ "targets": alertmanagers }] }]
            })
        }),
        global: Global {
            scrape_interval: INTERVAL,
            evaluation_interval: INTERVAL,
            external_labels: BTreeMap::from([("platform", platform.name.to_string())]),
        },
        // Relative: read next to the configuration (and so checked with it by promtool).
        rule_files: vec![RULES_FILE],
        scrape_configs: jobs.into_values().collect(),
    };
    let yaml = crate::yaml::to_string(&file, str::to_owned)
        .unwrap_or_else(|e| unreachable!("plain data serializes: {e}"));
    format!(
        "# Written by Gravity from gravity.toml (platform {}); rewritten by every `gravity up`.\n{yaml}",
        platform.name
    )
}

#[cfg(test)]
mod tests {
    //! The configuration Gravity writes for the shipped gravity.toml and the rules it ships,
    //! checked by Prometheus's own `promtool` (Debian's `prometheus`): `check config` (which
    //! checks the rule files it names too) and the rules' unit tests.

    use std::{path::Path, process::Command};

    use super::*;

    const RULES_TEST: &str = include_str!("prometheus_rules_test.yml");

    fn shipped() -> Manifest {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../gravity.toml");
        let text = std::fs::read_to_string(path).expect("the shipped gravity.toml");
        Manifest::parse("gravity.toml", &text).expect("the shipped gravity.toml parses")
    }

    fn promtool(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool runs (scripts/dev-deps.sh installs Debian's prometheus)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        text
    }

    #[test]
    fn the_shipped_platforms_configuration_and_rules_pass_promtool() {
        let manifest = shipped();
        let (name, infra) = manifest
            .infrastructure
            .iter()
            .find(|(_, i)| i.kind.name() == NAME)
            .expect("the shipped platform runs Prometheus");
        let runtime = Prometheus.container(
            &Instance {
                name,
                infra,
                platform: &manifest,
            },
            &[],
            &Secrets::default(),
        );
        let dir = std::env::temp_dir().join(format!("gravity-promtool-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for file in &runtime.files {
            let name = Path::new(&file.path).file_name().unwrap();
            std::fs::write(dir.join(name), &file.content).unwrap();
        }
        std::fs::write(dir.join("rules_test.yml"), RULES_TEST).unwrap();

        let checked = promtool(&dir, &["check", "config", CONFIG_FILE]);
        assert!(checked.contains("SUCCESS"), "{checked}");
        assert!(
            checked.contains(RULES_FILE),
            "the rules were checked: {checked}"
        );
        promtool(&dir, &["test", "rules", "rules_test.yml"]);

        // Every service, the gateway's admin listener, the broker's plugin (totals and per
        // queue) and both exporters are scraped, each under its gravity.toml name.
        let config = &runtime.files[0].content;
        for (service, spec) in &manifest.services {
            let target = if crate::gateway::is_gateway(spec) {
                format!("{service}:{}", crate::gateway::ADMIN_PORT)
            } else {
                format!("{service}:{}", spec.port.get())
            };
            assert!(
                config.contains(&format!("- \"{target}\""))
                    || config.contains(&format!("- {target}")),
                "{target} in\n{config}"
            );
        }
        for target in [
            "rabbitmq:15692",
            "postgres-exporter:9187",
            "redis-exporter:9121",
        ] {
            assert!(config.contains(target), "{target} in\n{config}");
        }
        assert!(config.contains("/metrics/detailed"), "{config}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
