//! The platform's desired state, built once from gravity.toml and the platform's secrets:
//! every container's image, environment, command line, files, ports and health check. `up`
//! makes containers from it, `export compose` writes it out, and `ps`, `status` and `logs`
//! read its resources; none of them works anything out again (Terraform's plan, then apply).

use std::collections::{BTreeMap, BTreeSet};

use crate::{
    gateway,
    images::Offline,
    infra::{self, Dependent, InitJob, Instance, Kind, Runtime},
    manifest::{ImageRef, Infra, Manifest, ServiceName},
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
    /// `NAME:ADDRESS` lines for its `/etc/hosts` (the engine's host, when spans go there).
    pub extra_hosts: Vec<String>,
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
    pub fn instance<'a>(&'a self, platform: &'a Manifest) -> Instance<'a> {
        Instance {
            name: &self.name,
            infra: &self.infra,
            platform,
        }
    }
}

/// The crate of the service that coordinates account export and erasure across the
/// platform (`PRIVACY_SERVICES`).
pub const USERS_CRATE: &str = "users";

impl Plan {
    /// The plan for `project` with `secrets` (which must have been ensured for it).
    pub fn build(project: &Project, secrets: &Secrets) -> Plan {
        let m = &project.manifest;
        let mut infrastructure = Vec::new();
        let mut uses: BTreeMap<&ServiceName, Vec<ServiceName>> = BTreeMap::new();
        let mut service_env: BTreeMap<&ServiceName, BTreeMap<String, String>> = BTreeMap::new();
        // Every service checks callers' identities with the gateway's public key.
        let identity_public = crate::identity::public_key(&secrets.identity_key);
        for (name, spec) in &m.services {
            let mut env = BTreeMap::new();
            env.insert("PORT".to_owned(), spec.port.get().to_string());
            // Gravity applies migrations itself, before the service starts.
            env.insert("MIGRATE_ON_START".to_owned(), "false".to_owned());
            // One line per request and per event recorded or handled, each with its span:
            // `gravity logs` and `gravity trace` follow a request through the platform.
            env.insert("ACCESS_LOG".to_owned(), "true".to_owned());
            if let Some(public) = &identity_public {
                env.insert("IDENTITY_PUBLIC_KEY".to_owned(), public.clone());
            }
            service_env.insert(name, env);
        }
        // The services on each broker: they hear each other's events.
        let mut on_broker: Vec<BTreeSet<&ServiceName>> = Vec::new();
        for (name, infra) in &m.infrastructure {
            let instance = Instance {
                name,
                infra,
                platform: m,
            };
            let dependents = project.dependents(&instance);
            let kind = infra.kind;
            if kind.carries_events() {
                on_broker.push(dependents.iter().map(|d| d.name).collect());
            }
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
        // Where every service's spans go: the platform's own trace backend, or the
        // collector gravity.toml names; on the engine's host, reached through its gateway.
        let backend = m.infrastructure.iter().find_map(|(name, infra)| {
            infra.kind.otlp_endpoint(&Instance {
                name,
                infra,
                platform: m,
            })
        });
        let extra_hosts: Vec<String> = match (&backend, &m.otlp_endpoint) {
            (None, Some(endpoint)) if endpoint.on_docker_host() => {
                vec![format!("{}:host-gateway", crate::manifest::DOCKER_HOST)]
            }
            _ => Vec::new(),
        };
        let traces = backend.or_else(|| m.otlp_endpoint.as_ref().map(|e| e.as_str().to_owned()));
        let mut services = BTreeMap::new();
        for (name, spec) in &m.services {
            let mut env = service_env.remove(name).unwrap_or_default();
            if let Some(traces) = &traces {
                env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), traces.clone());
                env.insert("OTEL_SERVICE_NAME".to_owned(), name.to_string());
            }
            let gateway = gateway::is_gateway(spec).then(|| {
                let (content, read_at_start) = gateway::config(m, name, &env);
                if !secrets.gateway_admin_token.is_empty() {
                    env.insert(
                        "GATEWAY_ADMIN_TOKEN".to_owned(),
                        secrets.gateway_admin_token.clone(),
                    );
                }
                // Only the gateway holds the private half.
                if !secrets.identity_key.is_empty() {
                    env.insert(
                        "GATEWAY_IDENTITY_KEY".to_owned(),
                        secrets.identity_key.clone(),
                    );
                }
                GatewayFile {
                    content,
                    read_at_start,
                }
            });
            if spec.crate_name == USERS_CRATE {
                // The users service asks every service it shares a broker with for an
                // account's export and erasure, and reports who has not answered.
                let asked: BTreeSet<&str> = on_broker
                    .iter()
                    .filter(|services| services.contains(name))
                    .flatten()
                    .map(|s| s.as_str())
                    .collect();
                if !asked.is_empty() {
                    env.insert(
                        "PRIVACY_SERVICES".to_owned(),
                        asked.into_iter().collect::<Vec<_>>().join(","),
                    );
                }
            }
            if spec.signing_key && !secrets.signing_key.is_empty() {
                env.insert(
                    "PLATFORM_SIGNING_KEY".to_owned(),
                    secrets.signing_key.clone(),
                );
            }
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
                    extra_hosts: extra_hosts.clone(),
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
            .map(|(name, infra)| {
                project.dependents(&Instance {
                    name,
                    infra,
                    platform: &project.manifest,
                })
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    //! A kind Gravity does not ship, defined here alone: parsing gravity.toml, generating its
    //! secrets, the plan of its container and its dependents' environment all pick it up
    //! with no edit anywhere else.

    use std::path::PathBuf;

    use futures_util::future::BoxFuture;

    use super::*;
    use crate::{
        images::{Offline, OfflineRecipe},
        infra::{Dependent, InfraError, Instance, Kind, Reach, Runtime, KINDS},
        manifest::{ImageRef, Manifest},
        project::Secrets,
    };

    /// The project a gravity.toml text describes, in the current folder.
    fn project_of(text: &str) -> Project {
        Project {
            manifest: Manifest::parse("gravity.toml", text).unwrap(),
            root: PathBuf::from("."),
            workspace: PathBuf::from("."),
        }
    }

    #[derive(Debug)]
    struct Memcached;

    impl Kind for Memcached {
        fn name(&self) -> &'static str {
            "memcached"
        }
        fn title(&self) -> &'static str {
            "Memcached"
        }
        fn default_image(&self) -> (&'static str, &'static str) {
            ("memcached", "1.6")
        }
        fn offline(&self, _wanted: &ImageRef) -> Option<Offline> {
            Some(Offline {
                image: crate::infra::offline_ref("memcached", "1.6"),
                recipe: OfflineRecipe {
                    packages: vec!["memcached".to_owned()],
                    ..OfflineRecipe::default()
                },
            })
        }
        fn container_port(&self) -> u16 {
            11211
        }
        fn volume_path(&self) -> &'static str {
            "/var/lib/memcached"
        }
        fn container(
            &self,
            instance: &Instance<'_>,
            _dependents: &[Dependent<'_>],
            secrets: &Secrets,
        ) -> Runtime {
            let admin = secrets
                .infra(instance.name.as_str())
                .map_or("", |s| s.admin.as_str());
            Runtime {
                env: BTreeMap::from([("MEMCACHED_PASSWORD".to_owned(), admin.to_owned())]),
                cmd: Some(vec!["memcached".to_owned(), "-S".to_owned()]),
                ..Runtime::default()
            }
        }
        fn healthcheck(&self) -> Vec<String> {
            vec!["CMD".to_owned(), "true".to_owned()]
        }
        fn env_for(
            &self,
            instance: &Instance<'_>,
            dependent: &Dependent<'_>,
            secrets: &Secrets,
        ) -> Vec<(String, String)> {
            let password = secrets
                .infra(instance.name.as_str())
                .map_or("", |s| s.user(dependent.name.as_str()));
            vec![(
                "MEMCACHED_URL".to_owned(),
                format!(
                    "memcache://{}:{password}@{}:11211",
                    dependent.name, instance.name
                ),
            )]
        }
        fn probe<'a>(&'a self, _reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
            Box::pin(async { Ok(true) })
        }
    }

    static MEMCACHED: Memcached = Memcached;

    #[test]
    fn a_kind_defined_in_one_module_is_parsed_planned_and_given_to_its_dependents() {
        let text = r#"
[platform]
name = "shop"

[infrastructure.postgres]
port = 25432

[infrastructure.sessions]
kind = "memcached"
port = 21211

[services.orders]
port = 28001
database = "orders"
depends_on = ["postgres", "sessions"]

[services.catalog]
port = 28002
database = "catalog"
depends_on = ["postgres"]
"#;
        // Unknown to the shipped kinds: refused, naming the known ones.
        let err = Manifest::parse("gravity.toml", text).unwrap_err();
        assert!(err.message.contains("unknown infrastructure kind"), "{err}");
        assert!(err.help.unwrap_or_default().contains("rabbitmq"));

        let kinds: Vec<&'static dyn Kind> = KINDS
            .iter()
            .copied()
            .chain([&MEMCACHED as &dyn Kind])
            .collect();
        let manifest = Manifest::parse_with_kinds("gravity.toml", text, &kinds).unwrap();
        let project = Project {
            manifest,
            root: PathBuf::from("."),
            workspace: PathBuf::from("."),
        };
        let mut secrets = Secrets::default();
        assert!(project.complete_secrets(&mut secrets));
        let own = secrets
            .infra("sessions")
            .cloned()
            .expect("its secrets were generated");
        assert_eq!(own.admin.len(), 32);
        assert_eq!(own.users.keys().collect::<Vec<_>>(), ["orders"]);
        assert!(!project.complete_secrets(&mut secrets), "generated once");

        let plan = Plan::build(&project, &secrets);
        let sessions = plan.infra("sessions").expect("planned");
        assert_eq!(sessions.kind.title(), "Memcached");
        assert_eq!(sessions.wanted.to_string(), "memcached:1.6");
        assert_eq!(
            (sessions.container_port, sessions.host_port),
            (11211, 21211)
        );
        assert_eq!(sessions.runtime.env["MEMCACHED_PASSWORD"], own.admin);
        assert_eq!(sessions.dependents.len(), 1);
        let orders = &plan.services[&ServiceName::parse("orders").unwrap()];
        assert_eq!(
            orders.env["MEMCACHED_URL"],
            format!("memcache://orders:{}@sessions:11211", own.user("orders"))
        );
        assert!(orders.env["DATABASE_URL"].starts_with("postgres://orders:"));
        assert_eq!(
            orders
                .uses
                .iter()
                .map(ServiceName::as_str)
                .collect::<Vec<_>>(),
            ["postgres", "sessions"]
        );
        let catalog = &plan.services[&ServiceName::parse("catalog").unwrap()];
        assert!(
            !catalog.env.contains_key("MEMCACHED_URL"),
            "only its dependents"
        );
        let resources = project.resources();
        assert!(resources
            .iter()
            .any(|r| r.name == "sessions" && r.kind == "infrastructure" && r.port == 21211));
    }

    #[test]
    fn only_a_service_with_signing_key_gets_the_platforms_signing_key() {
        let text = r#"
[platform]
name = "shop"

[infrastructure.postgres]
port = 25432

[services.audit]
port = 28001
database = "audit"
signing_key = true

[services.orders]
port = 28002
database = "orders"
"#;
        let project = project_of(text);
        let mut secrets = Secrets::default();
        assert!(project.complete_secrets(&mut secrets));
        assert!(crate::identity::public_key(&secrets.signing_key).is_some());
        let key = secrets.signing_key.clone();
        project.complete_secrets(&mut secrets);
        assert_eq!(secrets.signing_key, key, "generated once");

        let plan = Plan::build(&project, &secrets);
        let audit = &plan.services[&ServiceName::parse("audit").unwrap()];
        let orders = &plan.services[&ServiceName::parse("orders").unwrap()];
        assert_eq!(audit.env.get("PLATFORM_SIGNING_KEY"), Some(&key));
        assert!(!orders.env.contains_key("PLATFORM_SIGNING_KEY"));
    }

    #[test]
    fn every_service_sends_its_spans_to_the_platforms_trace_backend_or_collector() {
        let base = r#"
[platform]
name = "shop"
OTLP

[infrastructure.postgres]
port = 25432

[services.audit]
port = 28001
database = "audit"

[services.orders]
port = 28002
database = "orders"
"#;
        let spans_of = |text: &str| {
            let project = project_of(text);
            let mut secrets = Secrets::default();
            project.complete_secrets(&mut secrets);
            let plan = Plan::build(&project, &secrets);
            plan.services
                .iter()
                .map(|(name, s)| {
                    (
                        name.to_string(),
                        s.env.get("OTEL_EXPORTER_OTLP_ENDPOINT").cloned(),
                        s.env.get("OTEL_SERVICE_NAME").cloned(),
                        s.extra_hosts.clone(),
                    )
                })
                .collect::<Vec<_>>()
        };
        // None: nothing is exported.
        for (_, endpoint, _, hosts) in spans_of(&base.replace("OTLP", "")) {
            assert_eq!(endpoint, None);
            assert!(hosts.is_empty());
        }
        // A Jaeger: every service, without naming it in depends_on.
        let jaeger = format!(
            "{}\n[infrastructure.traces]\nkind = \"jaeger\"\nport = 16686\n",
            base.replace("OTLP", "")
        );
        for (name, endpoint, service, hosts) in spans_of(&jaeger) {
            assert_eq!(endpoint.as_deref(), Some("http://traces:4318"), "{name}");
            assert_eq!(service, Some(name));
            assert!(hosts.is_empty());
        }
        // A collector on the engine's host: reached through its gateway.
        let host = base.replace(
            "OTLP",
            "otlp_endpoint = \"http://host.docker.internal:4318/\"",
        );
        for (_, endpoint, _, hosts) in spans_of(&host) {
            assert_eq!(
                endpoint.as_deref(),
                Some("http://host.docker.internal:4318")
            );
            assert_eq!(hosts, ["host.docker.internal:host-gateway"]);
        }
        let elsewhere = base.replace("OTLP", "otlp_endpoint = \"http://collector.internal:4318\"");
        for (_, endpoint, _, hosts) in spans_of(&elsewhere) {
            assert_eq!(endpoint.as_deref(), Some("http://collector.internal:4318"));
            assert!(hosts.is_empty());
        }
        // Both: refused, with the line.
        let both = format!("{}\n[infrastructure.jaeger]\nport = 16686\n", elsewhere);
        let err = Manifest::parse("gravity.toml", &both).expect_err("one destination");
        assert!(err.message.contains("one place"), "{err:?}");
        // Endpoints a container cannot use.
        for (bad, says) in [
            ("http://127.0.0.1:4318", "own container"),
            ("http://localhost:4318", "own container"),
            ("https://collector.example.com", "http://"),
            ("collector:4318", "http://"),
            ("http://collector:4318/?x=1", "no query"),
        ] {
            let text = base.replace("OTLP", &format!("otlp_endpoint = {bad:?}"));
            let err = Manifest::parse("gravity.toml", &text).expect_err(bad);
            assert!(err.message.contains(says), "{bad}: {err:?}");
            assert_eq!(err.line, 4, "{bad}");
        }
    }

    #[test]
    fn the_users_service_asks_every_service_on_its_broker_for_exports_and_erasures() {
        let text = r#"
[platform]
name = "shop"

[infrastructure.postgres]
port = 25432

[infrastructure.rabbitmq]
port = 25672

[services.users]
port = 28001
database = "users"
depends_on = ["rabbitmq"]

[services.orders]
port = 28002
database = "orders"
depends_on = ["rabbitmq"]

[services.reports]
port = 28003
database = "reports"
"#;
        let project = project_of(text);
        let mut secrets = Secrets::default();
        project.complete_secrets(&mut secrets);
        let plan = Plan::build(&project, &secrets);
        let env = |name: &str| &plan.services[&ServiceName::parse(name).unwrap()].env;
        assert_eq!(
            env("users").get("PRIVACY_SERVICES").map(String::as_str),
            Some("orders,users"),
            "a service off the broker cannot hear the request, so it is not waited for"
        );
        assert!(!env("orders").contains_key("PRIVACY_SERVICES"));
    }
}
