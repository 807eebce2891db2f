//! The route table: which route a request belongs to, and each route's live pool.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tower::retry::budget::TpsBudget;

use crate::{
    config::{Route, UpstreamUrl},
    metrics::{RouteMetrics, UpstreamMetrics},
    upstream::{Pool, Upstream},
};

pub struct ActiveRoute {
    pub config: Route,
    pub pool: Pool,
    pub metrics: Arc<RouteMetrics>,
    /// Indexed like `pool.upstreams`.
    pub upstream_metrics: Vec<Arc<UpstreamMetrics>>,
    /// Retries may add at most a fifth to a route's traffic (plus a few per second), so
    /// retrying never multiplies the load on upstreams that are already failing.
    pub budget: Arc<TpsBudget>,
}

impl ActiveRoute {
    /// Whether `rest` (the path after the prefix) is listed as needing no token.
    pub fn is_public_path(&self, rest: &str) -> bool {
        let rest = if rest.is_empty() { "/" } else { rest };
        self.config
            .public_paths
            .iter()
            .any(|p| match p.strip_suffix("/*") {
                Some(tree) => {
                    rest == tree || rest.strip_prefix(tree).is_some_and(|r| r.starts_with('/'))
                }
                None => rest == p,
            })
    }
}

#[derive(Default, Clone)]
pub struct RouteTable {
    /// Host-specific routes first, then by prefix length, longest first.
    routes: Vec<Arc<ActiveRoute>>,
}

impl RouteTable {
    /// Builds the table for `routes`, carrying over upstream state, metrics and retry
    /// budgets from `previous` for every (route, upstream) pair that is still there.
    pub fn build(routes: &[Route], previous: Option<&RouteTable>) -> Self {
        let mut old_upstreams: HashMap<(String, UpstreamUrl), Arc<Upstream>> = HashMap::new();
        let mut old_routes: HashMap<String, &Arc<ActiveRoute>> = HashMap::new();
        if let Some(previous) = previous {
            for r in &previous.routes {
                old_routes.insert(r.config.name.as_str().to_owned(), r);
                for u in &r.pool.upstreams {
                    old_upstreams.insert(
                        (r.config.name.as_str().to_owned(), u.url.clone()),
                        Arc::clone(u),
                    );
                }
            }
        }
        let mut active: Vec<Arc<ActiveRoute>> = routes
            .iter()
            .map(|route| {
                let name = route.name.as_str().to_owned();
                let old = old_routes.get(&name);
                let upstreams: Vec<Arc<Upstream>> = route
                    .upstreams
                    .iter()
                    .map(
                        |url| match old_upstreams.get(&(name.clone(), url.clone())) {
                            Some(u) => {
                                u.reconfigure(route.breaker.clone(), route.outlier.clone());
                                Arc::clone(u)
                            }
                            None => Arc::new(Upstream::new(
                                url.clone(),
                                route.breaker.clone(),
                                route.outlier.clone(),
                            )),
                        },
                    )
                    .collect();
                let upstream_metrics = upstreams
                    .iter()
                    .map(|u| Arc::new(UpstreamMetrics::new(&name, &u.label)))
                    .collect();
                Arc::new(ActiveRoute {
                    pool: Pool::new(upstreams, route.balance, route.outlier.max_ejected_percent),
                    metrics: old
                        .map(|o| Arc::clone(&o.metrics))
                        .unwrap_or_else(|| Arc::new(RouteMetrics::new(&name))),
                    budget: old.map(|o| Arc::clone(&o.budget)).unwrap_or_else(|| {
                        Arc::new(TpsBudget::new(Duration::from_secs(10), 5, 0.2))
                    }),
                    upstream_metrics,
                    config: route.clone(),
                })
            })
            .collect();
        active.sort_by_key(|r| {
            (
                r.config.host.is_none(),
                std::cmp::Reverse(r.config.prefix.as_str().len()),
            )
        });
        Self { routes: active }
    }

    pub fn routes(&self) -> &[Arc<ActiveRoute>] {
        &self.routes
    }

    /// The route for a request and the path after its prefix.
    pub fn find<'p>(
        &self,
        host: Option<&str>,
        path: &'p str,
    ) -> Option<(&Arc<ActiveRoute>, &'p str)> {
        self.routes.iter().find_map(|r| {
            if let Some(want) = &r.config.host {
                if !host.is_some_and(|h| h.eq_ignore_ascii_case(want)) {
                    return None;
                }
            }
            r.config.prefix.strip(path).map(|rest| (r, rest))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn table(text: &str) -> RouteTable {
        RouteTable::build(&Config::parse(text, "t").unwrap().routes, None)
    }

    #[test]
    fn longest_prefix_and_host_win() {
        let t = table(
            r#"
            [[route]]
            name = "root"
            prefix = "/"
            access = "public"
            upstreams = ["http://a:1"]
            [[route]]
            name = "api"
            prefix = "/api"
            access = "public"
            upstreams = ["http://b:1"]
            [[route]]
            name = "users"
            prefix = "/api/users"
            access = "public"
            upstreams = ["http://c:1"]
            [[route]]
            name = "admin-host"
            prefix = "/api"
            host = "Admin.Example.com"
            access = "public"
            upstreams = ["http://d:1"]
        "#,
        );
        let name = |host, path| {
            t.find(host, path)
                .map(|(r, rest)| (r.config.name.as_str().to_owned(), rest.to_owned()))
        };
        assert_eq!(
            name(None, "/api/users/7"),
            Some(("users".into(), "/7".into()))
        );
        assert_eq!(
            name(None, "/api/usersx"),
            Some(("api".into(), "/usersx".into()))
        );
        assert_eq!(name(None, "/other"), Some(("root".into(), "/other".into())));
        assert_eq!(
            name(Some("admin.example.com"), "/api/users/7"),
            Some(("admin-host".into(), "/users/7".into()))
        );
    }

    #[test]
    fn public_paths_are_exact_or_subtrees() {
        let t = table(
            r#"
            [auth]
            jwks_url = "http://auth:8000/.well-known/jwks.json"
            [[route]]
            name = "auth"
            prefix = "/auth"
            upstreams = ["http://a:1"]
            public_paths = ["/login", "/docs/*"]
        "#,
        );
        let (r, _) = t.find(None, "/auth/login").unwrap();
        assert!(r.is_public_path("/login"));
        assert!(!r.is_public_path("/login/x"));
        assert!(r.is_public_path("/docs"));
        assert!(r.is_public_path("/docs/a/b"));
        assert!(!r.is_public_path("/docsx"));
        assert!(!r.is_public_path("/me"));
    }
}
