//! Jaeger: a trace backend with a UI. With it in the platform, every service and the gateway
//! send their spans to it over OTLP/HTTP (`OTEL_EXPORTER_OTLP_ENDPOINT`, its port 4318 on the
//! platform's network); its UI is on the instance's `port`, on loopback.
//!
//! Jaeger 2's all-in-one image, which keeps traces in memory: a recreated container starts
//! empty. Only where a registry answers: Debian packages no Jaeger, so there is no offline
//! build (the platform's logs still give `gravity trace`, and `[platform] otlp_endpoint`
//! sends spans to any collector that runs elsewhere).

use futures_util::future::BoxFuture;

use super::{
    http_healthcheck_any, http_ready, Dependent, InfraError, Instance, Kind, Reach, Runtime,
};
use crate::{images::Offline, manifest::ImageRef, project::Secrets};

pub const NAME: &str = "jaeger";
/// The UI and its API.
pub const UI_PORT: u16 = 16686;
/// OTLP over HTTP.
pub const OTLP_PORT: u16 = 4318;

#[derive(Debug)]
pub struct Jaeger;

impl Kind for Jaeger {
    fn name(&self) -> &'static str {
        NAME
    }

    fn title(&self) -> &'static str {
        "Jaeger"
    }

    fn default_image(&self) -> (&'static str, &'static str) {
        ("jaegertracing/jaeger", "2.5.0")
    }

    fn offline(&self, _wanted: &ImageRef) -> Option<Offline> {
        None
    }

    fn container_port(&self) -> u16 {
        UI_PORT
    }

    fn volume_path(&self) -> &'static str {
        // Unused by the in-memory store; kept so that a configuration with a disk store
        // (a later `settings`) keeps its data where the others do.
        "/var/lib/jaeger"
    }

    fn check(&self, instance: &Instance<'_>) -> Result<(), (String, String)> {
        let platform = instance.platform;
        if platform.otlp_endpoint.is_some() {
            return Err((
                "the platform's spans go to one place: this Jaeger or [platform] otlp_endpoint"
                    .to_owned(),
                "remove otlp_endpoint to see traces in Jaeger, or this table to send them to \
                 the collector it names"
                    .to_owned(),
            ));
        }
        let first = platform
            .infrastructure
            .iter()
            .find(|(name, infra)| {
                let other = Instance {
                    name,
                    infra,
                    platform,
                };
                infra.kind.otlp_endpoint(&other).is_some()
            })
            .map(|(name, _)| name);
        match first {
            Some(first) if first != instance.name => Err((
                format!("the platform's spans already go to {first}"),
                "keep one trace backend".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    fn otlp_endpoint(&self, instance: &Instance<'_>) -> Option<String> {
        Some(format!("http://{}:{OTLP_PORT}", instance.name))
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
        _instance: &Instance<'_>,
        _dependents: &[Dependent<'_>],
        _secrets: &Secrets,
    ) -> Runtime {
        Runtime::default()
    }

    fn healthcheck(&self) -> Vec<String> {
        http_healthcheck_any(UI_PORT, "/")
    }

    fn probe<'a>(&'a self, reach: Reach<'a>) -> BoxFuture<'a, Result<bool, InfraError>> {
        Box::pin(async move { Ok(http_ready(reach.port, "/").await) })
    }
}
