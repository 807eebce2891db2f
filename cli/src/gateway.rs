//! The gateway's configuration, written from gravity.toml: the service built from the
//! `gateway` crate routes to every service that has a `[services.NAME.route]`, verifies tokens
//! with the JWKS of the service named `auth` (or else the first built from the `auth` crate), and shares its rate limits
//! through the platform's Redis when it depends on it.
//!
//! Under `gravity up` the configuration is a file Gravity keeps in the gateway's container
//! ([`CONFIG_PATH`]): when only routes changed, `up` rewrites it and has the gateway reload it
//! in place; a change of anything else (what it reads at start) recreates the gateway. The
//! compose export passes the whole configuration as `GATEWAY_CONFIG_TOML` instead. Its admin
//! listener is published on the host's loopback for `gravity status` and `up`'s reload,
//! behind the platform's admin token.

use std::{collections::BTreeMap, net::SocketAddr};

use gateway_config::{Access, Auth, Config, ConfigFile, HealthCheck, RateLimit, RouteFile, Server};

use crate::manifest::{Manifest, ServiceName, ServiceSpec};

pub const GATEWAY_CRATE: &str = "gateway";
const AUTH_CRATE: &str = "auth";
/// The admin listener's port in the container. It is published on an ephemeral port of the
/// host's loopback only, and `/admin/*` there needs the platform's admin token (from its
/// secrets file, as `GATEWAY_ADMIN_TOKEN`), so neither the network nor the platform's other
/// containers can use it.
pub const ADMIN_PORT: u16 = 9080;

/// The host port the engine published a gateway container's admin listener on.
pub fn published_admin_port(inspect: &bollard::models::ContainerInspectResponse) -> Option<u16> {
    crate::containers::published_port(inspect, ADMIN_PORT)
}

pub fn is_gateway(spec: &ServiceSpec) -> bool {
    spec.crate_name == GATEWAY_CRATE
}

/// Where the gateway reads its configuration in its container under `gravity up`: a file
/// Gravity rewrites in place, so a changed route reloads without a restart.
pub const CONFIG_PATH: &str = "/etc/gravity-gateway.toml";

/// The gateway configuration for the gateway service `name`, whose environment (what its
/// infrastructure gives it: `REDIS_URL`, `REDIS_KEY_PREFIX`) is `env`, as typed values of the
/// gateway's own schema.
pub fn document(
    manifest: &Manifest,
    name: &ServiceName,
    env: &BTreeMap<String, String>,
) -> Option<ConfigFile> {
    let spec = manifest.services.get(name)?;
    let server = Server {
        listen: SocketAddr::from(([0, 0, 0, 0], spec.port.get())),
        admin_listen: SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT)),
        health_path: Some(spec.health.clone()),
        metrics_path: Some("/metrics".to_owned()),
        // The platform's access log: one JSON line per request through the gateway (route,
        // upstream, status, latency, request and trace ids), which `gravity logs` filters.
        access_log: true,
        ..Server::default()
    };

    let routed: Vec<(&ServiceName, &ServiceSpec)> = manifest
        .services
        .iter()
        .filter(|(n, s)| *n != name && s.route.is_some())
        .collect();
    let needs_tokens = routed.iter().any(|(_, s)| {
        s.route
            .as_ref()
            .is_some_and(|r| r.access != Some(Access::Public))
    });
    // The service named `auth` when there is one (a platform may run the auth crate more
    // than once), otherwise the first built from the auth crate.
    let auth = manifest
        .services
        .iter()
        .find(|(n, s)| n.as_str() == AUTH_CRATE && s.crate_name == AUTH_CRATE)
        .or_else(|| {
            manifest
                .services
                .iter()
                .find(|(_, s)| s.crate_name == AUTH_CRATE)
        })
        .filter(|_| needs_tokens)
        .map(|(auth_name, auth_spec)| {
            Auth::new(format!(
                "http://{auth_name}:{}/.well-known/jwks.json",
                auth_spec.port.get()
            ))
        });

    let mut rate_limit = RateLimit::default();
    if let Some(limits) = &spec.rate_limit {
        rate_limit.per_client = limits.per_client;
        rate_limit.per_user = limits.per_user;
    }
    // Limits are shared through the Redis the gateway uses, under its own key prefix (the
    // only keys its Redis user may touch).
    if let Some(url) = env.get("REDIS_URL") {
        rate_limit.redis_url = Some(url.clone());
        let prefix = env.get("REDIS_KEY_PREFIX").map_or("", String::as_str);
        rate_limit.key_prefix = format!("{prefix}rl");
    }

    let routes = routed
        .into_iter()
        .filter_map(|(service, s)| {
            let route = s.route.as_ref()?;
            let mut file = RouteFile::new(
                service.to_string(),
                route.prefix.clone(),
                vec![format!("http://{service}:{}", s.port.get())],
            );
            if let Some(strip) = route.strip_prefix {
                file.strip_prefix = strip;
            }
            if let Some(access) = route.access {
                file.access = access;
            }
            file.public_paths = route.public_paths.clone();
            if let Some(timeout) = route.timeout {
                file.timeout = timeout;
            }
            if let Some(retries) = route.retries {
                file.retries = retries;
            }
            file.health_check = Some(HealthCheck::new(s.health.clone()));
            Some(file)
        })
        .collect();
    Some(ConfigFile {
        server: Some(server),
        auth,
        rate_limit,
        routes,
    })
}

/// The gateway's file for the gateway service `name` (see [`document`]): the whole text, and
/// the part the gateway reads only when it starts (everything but its routes). A change of
/// the second recreates the gateway; a change of routes alone is reloaded in place.
pub fn config(
    manifest: &Manifest,
    name: &ServiceName,
    env: &BTreeMap<String, String>,
) -> (String, String) {
    let Some(mut doc) = document(manifest, name, env) else {
        return Default::default();
    };
    let whole = doc.to_toml().unwrap_or_default();
    doc.routes.clear();
    (whole, doc.to_toml().unwrap_or_default())
}

/// Checks the generated configuration as the gateway will, so `gravity check` and `up`
/// report a bad route before a container crashes on it.
pub fn check(plan: &crate::plan::Plan) -> Result<(), String> {
    for (name, service) in &plan.services {
        if let Some(file) = &service.gateway {
            Config::parse(&file.content, "the generated gateway.toml")
                .map_err(|e| format!("service {name}: {e}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_platform_gives_a_valid_gateway_configuration() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../gravity.toml");
        let project = crate::project::Project::load(&path).unwrap();
        let manifest = &project.manifest;
        let mut secrets = crate::project::Secrets::default();
        project.complete_secrets(&mut secrets);
        let plan = crate::plan::Plan::build(&project, &secrets);
        let (name, service) = plan
            .services
            .iter()
            .find(|(_, s)| s.gateway.is_some())
            .expect("the shipped platform has a gateway");
        let file = service.gateway.as_ref().unwrap();
        let text = &file.content;
        let parsed = Config::parse(text, "generated").unwrap();
        let auth = parsed
            .routes
            .iter()
            .find(|r| r.name.as_str() == "auth")
            .expect("a route to the auth service");
        assert_eq!(auth.upstreams[0].to_string(), "http://auth:8000");
        assert!(parsed
            .auth
            .unwrap()
            .jwks_url
            .starts_with("http://auth:8000/"));
        // Limits are counted in the platform's Redis as the gateway's own ACL user, under
        // the only key prefix that user may touch.
        let password = secrets.infra("redis").unwrap().user("gateway");
        assert_eq!(password.len(), 32);
        assert_eq!(
            parsed.rate_limit.redis_url.as_deref(),
            Some(format!("redis://gateway:{password}@redis:6379/").as_str())
        );
        assert_eq!(parsed.rate_limit.key_prefix, "gateway:rl");
        // The limits written in gravity.toml are the ones the gateway applies.
        let gateway = &manifest.services[name];
        let written = gateway.rate_limit.as_ref().expect("the shipped limits");
        assert!(written.per_client.is_some() && written.per_user.is_some());
        assert_eq!(parsed.rate_limit.per_client, written.per_client);
        assert_eq!(parsed.rate_limit.per_user, written.per_user);
        check(&plan).unwrap();

        // What the gateway reads only at start leaves the routes out, and nothing else.
        let at_start = &file.read_at_start;
        assert!(!at_start.contains("[[route]]"), "{at_start}");
        let mut full: toml::Table = toml::from_str(text).unwrap();
        full.remove("route");
        assert_eq!(toml::from_str::<toml::Table>(at_start).unwrap(), full);
    }
}
