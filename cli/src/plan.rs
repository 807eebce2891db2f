//! The platform's desired state, built once from gravity.toml and the platform's secrets:
//! every container's image, environment, command line, files, ports and health check. `up`
//! makes containers from it, `export compose` writes it out, and `ps`, `status` and `logs`
//! read its resources; none of them works anything out again (Terraform's plan, then apply).

use std::collections::BTreeMap;

use crate::{
    gateway,
    images::Offline,
    infra::{self, Dependent, InitJob, Instance, Kind, Runtime},
    manifest::{ImageRef, Infra, ServiceName},
    project::{Project, Secrets},
};

/// Everything Gravity would run for a platform.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Infrastructure, in name order.
    pub infrastructure: Vec<InfraPlan>,
    /// Services, in name order.
    pub services: BTreeMap<ServiceName, ServicePlan>,
}

/// One infrastructure container.
#[derive(Debug, Clone)]
pub struct InfraPlan {
    pub name: ServiceName,
    pub kind: &'static dyn Kind,
    pub infra: Infra,
    pub wanted: ImageRef,
    pub offline: Option<Offline>,
    pub runtime: Runtime,
    pub container_port: u16,
    pub host_port: u16,
    /// A port for people, published on an ephemeral loopback port.
    pub ui_port: Option<u16>,
    pub volume_path: &'static str,
    pub healthcheck: Vec<String>,
    /// Set when the kind needs a host name that survives recreation.
    pub hostname: Option<String>,
    /// The services that use it.
    pub dependents: Vec<ServiceName>,
    /// Its dependents' provisioning as a one-shot container, for an exported compose file.
    pub init: Option<InitJob>,
}

/// One service container.
#[derive(Debug, Clone)]
pub struct ServicePlan {
    pub crate_name: String,
    /// Its environment: port, what each infrastructure dependency gives it, gravity.toml's
    /// `env` last (it wins).
    pub env: BTreeMap<String, String>,
    pub port: u16,
    pub health: String,
    pub healthcheck: Vec<String>,
    /// What it depends on (infrastructure and services), as written.
    pub depends_on: Vec<ServiceName>,
    /// The infrastructure it uses, including PostgreSQL for its `database`.
    pub uses: Vec<ServiceName>,
    pub has_database: bool,
    /// On a gateway: its configuration file.
    pub gateway: Option<GatewayFile>,
}

/// The gateway's configuration, rendered once.
#[derive(Debug, Clone)]
pub struct GatewayFile {
    /// The whole file.
    pub content: String,
    /// What the gateway reads only when it starts (everything but its routes).
    pub read_at_start: String,
}

impl InfraPlan {
    pub fn instance(&self) -> Instance<'_> {
        Instance {
            name: &self.name,
            infra: &self.infra,
        }
    }
}

impl Plan {
    /// The plan for `project` with `secrets` (which must have been ensured for it).
    pub fn build(project: &Project, secrets: &Secrets) -> Plan {
        let m = &project.manifest;
        let mut infrastructure = Vec::new();
        let mut uses: BTreeMap<&ServiceName, Vec<ServiceName>> = BTreeMap::new();
        let mut service_env: BTreeMap<&ServiceName, BTreeMap<String, String>> = BTreeMap::new();
        for (name, spec) in &m.services {
            let mut env = BTreeMap::new();
            env.insert("PORT".to_owned(), spec.port.get().to_string());
            // Gravity applies migrations itself, before the service starts.
            env.insert("MIGRATE_ON_START".to_owned(), "false".to_owned());
            service_env.insert(name, env);
        }
        for (name, infra) in &m.infrastructure {
            let instance = Instance { name, infra };
            let dependents = project.dependents(&instance);
            let kind = infra.kind;
            for d in &dependents {
                uses.entry(d.name).or_default().push(name.clone());
                if let Some(env) = service_env.get_mut(d.name) {
                    for (k, v) in kind.env_for(&instance, d, secrets) {
                        // With two instances of one kind, the kind's usual variable names
                        // the first; the `<NAME>_URL` variables tell them apart.
                        env.entry(k).or_insert(v);
                    }
                }
            }
            infrastructure.push(InfraPlan {
                name: name.clone(),
                kind,
                infra: infra.clone(),
                wanted: infra.image.clone(),
                offline: kind.offline(&infra.image),
                runtime: kind.container(&instance, &dependents, secrets),
                container_port: kind.container_port(),
                host_port: infra.port.get(),
                ui_port: kind.ui().map(|ui| ui.port),
                volume_path: kind.volume_path(),
                healthcheck: kind.healthcheck(),
                hostname: kind.stable_hostname().then(|| name.to_string()),
                dependents: dependents.iter().map(|d| d.name.clone()).collect(),
                init: kind.compose_init(&instance, &dependents, secrets),
            });
        }
        let mut services = BTreeMap::new();
        for (name, spec) in &m.services {
            let mut env = service_env.remove(name).unwrap_or_default();
            let gateway = gateway::is_gateway(spec).then(|| {
                let (content, read_at_start) = gateway::config(m, name, &env);
                if !secrets.gateway_admin_token.is_empty() {
                    env.insert(
                        "GATEWAY_ADMIN_TOKEN".to_owned(),
                        secrets.gateway_admin_token.clone(),
                    );
                }
                GatewayFile {
                    content,
                    read_at_start,
                }
            });
            for (k, v) in &spec.env {
                env.insert(k.clone(), v.clone());
            }
            services.insert(
                name.clone(),
                ServicePlan {
                    crate_name: spec.crate_name.clone(),
                    env,
                    port: spec.port.get(),
                    health: spec.health.clone(),
                    healthcheck: infra::http_healthcheck(spec.port.get(), &spec.health),
                    depends_on: spec.depends_on.clone(),
                    uses: uses.remove(name).unwrap_or_default(),
                    has_database: spec.database.is_some(),
                    gateway,
                },
            );
        }
        Plan {
            infrastructure,
            services,
        }
    }

    pub fn infra(&self, name: &str) -> Option<&InfraPlan> {
        self.infrastructure.iter().find(|i| i.name.as_str() == name)
    }

    /// The dependents of an instance as the kind's provisioning takes them.
    pub fn dependents<'a>(project: &'a Project, plan: &InfraPlan) -> Vec<Dependent<'a>> {
        project
            .manifest
            .infrastructure
            .get_key_value(&plan.name)
            .map(|(name, infra)| project.dependents(&Instance { name, infra }))
            .unwrap_or_default()
    }
}
