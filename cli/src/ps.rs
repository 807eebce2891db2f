//! `gravity ps`: each resource of the platform, its state, health and published port.

use serde::Serialize;

use crate::{
    engine::{resource_of, Engine, EngineError},
    project::Project,
};

/// A published port meant for people.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Ui {
    pub what: &'static str,
    pub url: String,
}

/// One row of `gravity ps`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Row {
    pub resource: String,
    pub kind: &'static str,
    pub container: Option<String>,
    /// `running`, `exited`, ... or `not created`.
    pub state: String,
    /// Docker's health check verdict: `healthy`, `unhealthy`, `starting`, or empty.
    pub health: String,
    pub port: Option<u16>,
    /// Where a port meant for people answers (a broker's management UI), and what it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ui: Option<Ui>,
    /// Docker's human status, e.g. "Up 5 minutes (healthy)".
    pub status: String,
}

pub async fn ps(project: &Project) -> Result<Vec<Row>, EngineError> {
    let engine = Engine::connect().await?;
    let found = engine.containers(project.label_filter()).await?;
    let mut rows = Vec::new();
    for r in project.resources() {
        let container = found
            .iter()
            .find(|c| resource_of(c) == Some(r.name.as_str()));
        let mut found_row = row(&engine, r.name, r.kind, Some(r.port), container).await;
        if let (Some((ui_port, what)), Some(c)) = (r.ui, container) {
            found_row.ui = c
                .ports
                .iter()
                .flatten()
                .find(|p| p.private_port == ui_port)
                .and_then(|p| p.public_port)
                .map(|port| Ui {
                    what,
                    url: format!("http://127.0.0.1:{port}"),
                });
        }
        rows.push(found_row);
    }
    // Containers of this platform that gravity.toml no longer describes.
    for c in &found {
        let resource = resource_of(c).unwrap_or_default().to_owned();
        if !rows.iter().any(|r| r.resource == resource) {
            rows.push(row(&engine, resource, "orphan", None, Some(c)).await);
        }
    }
    Ok(rows)
}

async fn row(
    engine: &Engine,
    resource: String,
    kind: &'static str,
    port: Option<u16>,
    container: Option<&bollard::models::ContainerSummary>,
) -> Row {
    let Some(c) = container else {
        return Row {
            resource,
            kind,
            container: None,
            state: "not created".to_owned(),
            health: String::new(),
            port,
            ui: None,
            status: String::new(),
        };
    };
    let name = c
        .names
        .iter()
        .flatten()
        .next()
        .map(|n| n.trim_start_matches('/').to_owned());
    let health = match c.id.as_deref() {
        Some(id) => engine
            .api()
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.health)
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .unwrap_or_default(),
        None => String::new(),
    };
    // The resource's own port: a gateway also publishes its admin listener.
    let published = c
        .ports
        .iter()
        .flatten()
        .filter(|p| port.is_none_or(|own| p.private_port == own))
        .find_map(|p| p.public_port)
        .or(port);
    Row {
        resource,
        kind,
        container: name,
        state: c.state.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        health: if health == "none" {
            String::new()
        } else {
            health
        },
        port: published,
        ui: None,
        status: c.status.clone().unwrap_or_default(),
    }
}

/// The rows as an aligned table.
pub fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<14} {:<15} {:<12} {:<10} {:<6} {}\n",
        "RESOURCE", "KIND", "STATE", "HEALTH", "PORT", "STATUS"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<14} {:<15} {:<12} {:<10} {:<6} {}\n",
            r.resource,
            r.kind,
            r.state,
            if r.health.is_empty() { "-" } else { &r.health },
            r.port
                .map(|p| p.to_string())
                .unwrap_or_else(|| "-".to_owned()),
            r.status
        ));
        if let Some(ui) = &r.ui {
            out.push_str(&format!("{:<14} {} {}\n", "", ui.what, ui.url));
        }
    }
    out
}
