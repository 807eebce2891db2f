//! Grafana: the platform's dashboards, on the instance's `port` on loopback. Provisioned from
//! gravity.toml: the platform's Prometheus as its data source (and its Jaeger, when there is
//! one), a platform overview as the home dashboard and one dashboard per service, all kept in
//! this repository as JSON (`grafana/platform.json`, `grafana/service.json`, whose
//! `__SERVICE__` becomes each service's name). A service added to gravity.toml gets its
//! dashboard at the next `gravity up`: the files are rewritten in place and Grafana rereads
//! them, without a restart.
//!
//! Anyone on the machine may view (anonymous viewers, on loopback only); editing needs the
//! `admin` login, whose password is in the platform's secrets file. Only where a registry
//! answers: Debian packages no Grafana, so there is no offline build (Prometheus's own UI
//! and `gravity status` show the same numbers without it).

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use serde_json::json;

use super::{
    http_healthcheck_any, http_ready, Dependent, InfraError, Instance, Kind, Reach, Runtime,
    RuntimeFile, Scrape,
};
use crate::{images::Offline, manifest::ImageRef, project::Secrets};

pub const NAME: &str = "grafana";
pub const PORT: u16 = 3000;
const PROVISIONING: &str = "/etc/grafana/provisioning";
/// Beside the provider's own file (Grafana reads only `.yml` there as providers, and only
/// `.json` as dashboards): a folder the image has, as every kept file's must be.
const DASHBOARDS: &str = "/etc/grafana/provisioning/dashboards";
const PLATFORM: &str = include_str!("grafana/platform.json");
const SERVICE: &str = include_str!("grafana/service.json");
/// The data sources' ids the dashboards name.
const PROMETHEUS_UID: &str = "gravity-prometheus";
const JAEGER_UID: &str = "gravity-jaeger";

#[derive(Debug)]
pub struct Grafana;

impl Kind for Grafana {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Grafana"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("grafana/grafana", "12.0.0")
    }

    fn offline(&self, _wanted: &ImageRef) -> Option<Offline> {
        None
    }

    fn container_port(&self) -> u16 {
        PORT
    }

    fn volume_path(&self) -> &'static str {
        "/var/lib/grafana"
    }

    fn check(&self, instance: &Instance<'_>) -> Result<(), (String, String)> {
        if first_of(instance, super::prometheus::NAME).is_none() {
            return Err((
                "Grafana shows the platform's Prometheus, and this platform has none".to_owned(),
                "add [infrastructure.prometheus] with a port (e.g. 59090)".to_owned(),
            ));
        }
        Ok(())
    }

    fn container(
        &self,
        instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        secrets: &Secrets,
    ) -> Runtime {
        let env = BTreeMap::from(
            [
                ("GF_SECURITY_ADMIN_USER", "admin".to_owned()),
                (
                    "GF_SECURITY_ADMIN_PASSWORD",
                    secrets.infra_admin(instance.name.as_str()).to_owned(),
                ),
                ("GF_AUTH_ANONYMOUS_ENABLED", "true".to_owned()),
                ("GF_AUTH_ANONYMOUS_ORG_ROLE", "Viewer".to_owned()),
                ("GF_USERS_ALLOW_SIGN_UP", "false".to_owned()),
                ("GF_ANALYTICS_REPORTING_ENABLED", "false".to_owned()),
                ("GF_ANALYTICS_CHECK_FOR_UPDATES", "false".to_owned()),
                ("GF_NEWS_NEWS_FEED_ENABLED", "false".to_owned()),
                (
                    "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
                    format!("{DASHBOARDS}/platform.json"),
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        Runtime {
            env,
            cmd: None,
            files: files(instance),
            program: Some("/run.sh"),
        }
    }

    fn healthcheck(&self) -> Vec<String> {
        http_healthcheck_any(PORT, "/api/health")
    }

    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move { Ok(http_ready(reach.port, "/api/health").await) })
    }

    fn scrape(&self) -> Vec<Scrape> {
        vec![Scrape::metrics(NAME, PORT)]
    }

    /// Dashboards are reread from their folder every 10 s; data sources are reloaded
    /// through the admin API.
    fn reload<'a>(
        &'a self,
        reach: Reach<'a>,
        http: &'a reqwest::Client,
    ) -> BoxFuture<'a, Result<(), InfraError>> {
        Box::pin(async move {
            let failed = |detail: String| InfraError::Request {
                title: "Grafana",
                port: reach.port,
                detail,
            };
            let admin = reach.secrets.infra_admin(reach.instance.name.as_str());
            for what in ["datasources", "dashboards"] {
                let response = http
                    .post(format!(
                        "http://127.0.0.1:{}/api/admin/provisioning/{what}/reload",
                        reach.port
                    ))
                    .basic_auth("admin", Some(admin))
                    .timeout(std::time::Duration::from_secs(10))
                    .send()
                    .await
                    .map_err(|e| failed(format!("reloading its {what}: {e}")))?;
                if !response.status().is_success() {
                    let status = response.status();
                    return Err(failed(format!(
                        "it refused to reload its {what} ({status})"
                    )));
                }
            }
            Ok(())
        })
    }
}

/// The first instance of kind `kind` in the instance's platform.
fn first_of<'a>(instance: &Instance<'a>, kind: &str) -> Option<&'a crate::manifest::ServiceName> {
    instance
        .platform
        .infrastructure
        .iter()
        .find(|(_, i)| i.kind.name() == kind)
        .map(|(name, _)| name)
}

/// The provisioning files: data sources, the dashboards' folder, and the dashboards.
fn files(instance: &Instance<'_>) -> Vec<RuntimeFile> {
    let mut sources = Vec::new();
    if let Some(prometheus) = first_of(instance, super::prometheus::NAME) {
        sources.push(json!({
            "name": "Prometheus",
            "uid": PROMETHEUS_UID,
            "type": "prometheus",
            "access": "proxy",
            "url": format!("http://{prometheus}:{}", super::prometheus::PORT),
            "isDefault": true,
            "editable": false,
            "jsonData": { "timeInterval": "5s" },
        }));
    }
    if let Some(jaeger) = first_of(instance, super::jaeger::NAME) {
        sources.push(json!({
            "name": "Jaeger",
            "uid": JAEGER_UID,
            "type": "jaeger",
            "access": "proxy",
            "url": format!("http://{jaeger}:{}", super::jaeger::UI_PORT),
            "editable": false,
        }));
    }
    let yaml = |document: serde_json::Value| {
        let text = crate::yaml::to_string(&document, str::to_owned)
            .unwrap_or_else(|e| unreachable!("plain data serializes: {e}"));
        format!("# Written by Gravity from gravity.toml; rewritten by every `gravity up`.\n{text}")
    };
    let mut files = vec![
        RuntimeFile {
            path: format!("{PROVISIONING}/datasources/gravity.yml"),
            content: yaml(json!({
                "apiVersion": 1,
                "deleteDatasources": [
                    { "name": "Prometheus", "orgId": 1 },
                    { "name": "Jaeger", "orgId": 1 },
                ],
                "datasources": sources,
            })),
        },
        RuntimeFile {
            path: format!("{PROVISIONING}/dashboards/gravity.yml"),
            content: yaml(json!({
                "apiVersion": 1,
                "providers": [{
                    "name": "gravity",
                    "folder": "Gravity",
                    "type": "file",
                    "disableDeletion": true,
                    "allowUiUpdates": false,
                    "updateIntervalSeconds": 10,
                    "options": { "path": DASHBOARDS },
                }],
            })),
        },
        RuntimeFile {
            path: format!("{DASHBOARDS}/platform.json"),
            content: PLATFORM.to_owned(),
        },
    ];
    for name in instance.platform.services.keys() {
        files.push(RuntimeFile {
            path: format!("{DASHBOARDS}/service-{name}.json"),
            // A removed service's dashboard stays until the container is recreated.
            content: service_dashboard(name.as_str()),
        });
    }
    files
}

/// The service dashboard for `service`: names are lowercase kebab-case, so they go into
/// the JSON's strings and PromQL's label matchers as they are.
fn service_dashboard(service: &str) -> String {
    SERVICE.replace("__SERVICE__", service)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::manifest::Manifest;

    const PLATFORM_TOML: &str = r#"
[platform]
name = "shop"

[infrastructure.postgres]
port = 55432

[infrastructure.prometheus]
port = 59090

[infrastructure.jaeger]
port = 16686

[infrastructure.grafana]
port = 53000

[services.orders]
port = 8000
database = "orders"
depends_on = ["postgres"]
"#;

    fn instance_files() -> Vec<RuntimeFile> {
        let manifest = Manifest::parse("gravity.toml", PLATFORM_TOML).expect("parses");
        let (name, infra) = manifest
            .infrastructure
            .iter()
            .find(|(_, i)| i.kind.name() == NAME)
            .expect("grafana");
        files(&Instance {
            name,
            infra,
            platform: &manifest,
        })
    }

    /// Every query of every dashboard, with the dashboard it is in.
    fn queries(dashboard: &serde_json::Value) -> Vec<String> {
        let mut out = Vec::new();
        for panel in dashboard["panels"].as_array().expect("panels") {
            assert_eq!(
                panel["datasource"]["uid"], PROMETHEUS_UID,
                "{}",
                panel["title"]
            );
            for target in panel["targets"].as_array().expect("targets") {
                out.push(target["expr"].as_str().expect("expr").to_owned());
            }
        }
        out
    }

    #[test]
    fn dashboards_are_provisioned_for_the_platform_and_each_service() {
        let files = instance_files();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/etc/grafana/provisioning/datasources/gravity.yml",
                "/etc/grafana/provisioning/dashboards/gravity.yml",
                "/etc/grafana/provisioning/dashboards/platform.json",
                "/etc/grafana/provisioning/dashboards/service-orders.json",
            ]
        );
        let sources = &files[0].content;
        assert!(
            sources.contains(r#"url: "http://prometheus:9090""#),
            "{sources}"
        );
        assert!(
            sources.contains(r#"url: "http://jaeger:16686""#),
            "{sources}"
        );
        let orders: serde_json::Value =
            serde_json::from_str(&files[3].content).expect("the service dashboard is JSON");
        assert_eq!(orders["uid"], "gravity-svc-orders");
        assert_eq!(orders["title"], "orders");
        let exprs = queries(&orders);
        assert!(exprs.iter().all(|e| !e.contains("__SERVICE__")));
        assert!(exprs.iter().any(|e| e.contains(r#"resource="orders""#)));
    }

    #[test]
    fn grafana_needs_a_prometheus() {
        let without = PLATFORM_TOML.replace("[infrastructure.prometheus]\nport = 59090\n", "");
        let err = Manifest::parse("gravity.toml", &without).expect_err("refused");
        assert!(err.message.contains("has none"), "{err:?}");
    }

    /// Every panel's query is PromQL Prometheus accepts: promtool checks them as recording
    /// rules (a typo in a dashboard fails here, not in a user's browser).
    #[test]
    fn every_dashboard_query_is_valid_promql() {
        let mut rules = Vec::new();
        for dashboard in [PLATFORM.to_owned(), service_dashboard("orders")] {
            let dashboard: serde_json::Value =
                serde_json::from_str(&dashboard).expect("dashboards are JSON");
            for (i, expr) in queries(&dashboard).into_iter().enumerate() {
                rules.push(json!({ "record": format!("dashboard:query_{i}:check"), "expr": expr }));
            }
        }
        assert!(rules.len() > 20, "{} queries", rules.len());
        let document = json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
        let dir = std::env::temp_dir().join(format!("gravity-dashboards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("dashboards.yml");
        std::fs::write(
            &path,
            crate::yaml::to_string(&document, str::to_owned).expect("yaml"),
        )
        .expect("write rules");
        let out = Command::new("promtool")
            .args(["check", "rules"])
            .arg(&path)
            .output()
            .expect("promtool runs (scripts/dev-deps.sh installs it)");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
