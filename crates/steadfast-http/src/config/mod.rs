//! Policies from a configuration file (feature `serde`): named policy sets in JSON, TOML or
//! YAML, each policy built into one standard client stack.
//!
//! A policy file names its policies, the retry budgets several of them share, and which
//! routes each serves:
//!
//! ```toml
//! [budgets.backend]                # one budget, shared by every policy that names it
//! ratio = 0.1
//! min_retries_per_sec = 5
//! ttl = "10s"
//!
//! [policies.payments]
//! timeout = "2s"
//! attempt_timeout = "500ms"
//! retry = { max_attempts = 3, budget = "backend", backoff = { base = "50ms", cap = "1s" } }
//! breaker = { count_window = 20, minimum_calls = 10, break_duration = "5s" }
//!
//! [policies.search]
//! timeout = "800ms"
//! retry = { max_attempts = 2, budget = "backend" }
//! limit = { max_in_flight = 32 }
//!
//! [[routes]]
//! method = "POST"
//! path = "/payments/{id}"
//! policy = "payments"
//!
//! [[routes]]
//! grpc = "shop.Search"
//! policy = "search"
//! ```
//!
//! [`PolicySet::from_toml_str`] (or `from_json_str`, `from_yaml_str`) reads such a text and
//! builds every policy at once: each setting goes to the builder of its layer
//! ([`PolicyConfig`]: the preset's, the retry's, the breaker's...), which alone validates it
//! and alone knows its default, so a file and code can never disagree. Every error names the
//! field by its full path: a parse error (malformed text, unknown or missing field, wrong
//! type: [`LoadError::Parse`]) and an invalid value ([`LoadError::Invalid`]) alike, e.g.
//! `policies.payments.retry.max_attempts` or `routes[2].policy`. The field-by-field reference,
//! with every default and where it comes from, is `docs/config.md`. [`PolicySet::from_path`]
//! reads a file in the format its extension names.
//!
//! [`PolicySet::route_layer`] makes the `routes` a router
//! ([`RouteLayer`]): the first route that matches a request takes
//! it, and the policy named by a top-level `fallback = "name"` takes the requests no route
//! matches (without one they fail with [`NoRoute`](crate::route::NoRoute)). Each route entry
//! gets its own instance of its policy (its own breaker and limits, as Envoy gives each route);
//! a budget named under `budgets` stays one budget for all.
//!
//! ```
//! use steadfast_http::config::PolicySet;
//! let set = PolicySet::from_toml_str(r#"
//!     [budgets.backend]
//!     ratio = 0.1
//!     [policies.payments]
//!     timeout = "2s"
//!     retry = { max_attempts = 3, budget = "backend" }
//!     [policies.search]
//!     retry = { budget = "backend" }
//! "#)?;
//! let payments = set.policy("payments").unwrap();
//! assert_eq!(payments.max_attempts(), 3);
//! assert_eq!(payments.timeout(), std::time::Duration::from_secs(2));
//! let err = PolicySet::from_toml_str("[policies.payments]\nretry = { max_attempts = 0 }").unwrap_err();
//! assert_eq!(err.path(), "policies.payments.retry.max_attempts");
//! # Ok::<(), steadfast_http::config::LoadError>(())
//! ```

mod error;
mod policy;
mod route;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use steadfast_layers::retry::{RatioBudget, RatioBudgetConfig};
use steadfast_layers::telemetry::Telemetry;

pub use error::{Format, LoadError};
pub use policy::{AttemptTimeoutConfig, Backpressure, PolicyConfig, PolicyLayer};
pub use route::{RouteConfig, RouteEntry};

use crate::classify::{GrpcClassifier, HttpClassifier};
use crate::error::ConfigError;
use crate::preset::{StandardClientBuilder, StandardClientLayer};
use crate::route::{RouteLayer, RouteMatch};

/// A policy file as written: shared `budgets`, named `policies`, and `routes`. Read it with
/// serde from any format, then [`build`](Self::build) it; or let
/// [`PolicySet::from_toml_str`] and its siblings do both, with the field paths in errors.
///
/// ```
/// use steadfast_http::config::PolicySetConfig;
/// let config: PolicySetConfig = serde_json::from_str(r#"{ "policies": { "default": {} } }"#)?;
/// let set = config.build()?;
/// assert_eq!(set.names().collect::<Vec<_>>(), ["default"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicySetConfig {
    /// Retry budgets by name, each one [`RatioBudget`] shared by every policy that names it
    /// (in `retry.budget`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub budgets: BTreeMap<String, RatioBudgetConfig>,
    /// Policies by name.
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyConfig>,
    /// Which policy serves which route, in order (the first match takes the request).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteEntry>,
    /// The policy that serves requests no route matches (default: none, and such a request
    /// fails with [`NoRoute`](crate::route::NoRoute) before anything is sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<String>,
}

/// A built policy set: one stack per policy ([`PolicyLayer`]), the shared budgets, and the
/// checked routes. `Cl` is the classifier: [`HttpClassifier`] ([`PolicySetConfig::build`],
/// [`PolicySet::from_toml_str`]...) or [`GrpcClassifier`]
/// ([`PolicySetConfig::build_grpc`]).
///
/// ```
/// use steadfast_http::config::PolicySet;
/// let set = PolicySet::from_yaml_str("policies:\n  search:\n    timeout: 800ms\n")?;
/// assert_eq!(set.policy("search").unwrap().timeout(), std::time::Duration::from_millis(800));
/// assert!(set.policy("payments").is_none());
/// # Ok::<(), steadfast_http::config::LoadError>(())
/// ```
#[derive(Debug)]
pub struct PolicySet<Cl = HttpClassifier> {
    budgets: BTreeMap<String, Arc<RatioBudget>>,
    policies: BTreeMap<String, PolicyLayer<Cl>>,
    routes: Vec<RouteConfig>,
    matches: Vec<RouteMatch>,
    fallback: Option<String>,
    /// The policies as written, to build a fresh stack per route.
    configs: BTreeMap<String, PolicyConfig>,
    preset: fn() -> StandardClientBuilder<Cl>,
    classifier: fn(&PolicyConfig) -> Result<Cl, ConfigError>,
}

impl PolicySetConfig {
    /// Builds every policy over HTTP ([`HttpClassifier`], `Idempotency-Key`s on): budgets
    /// first, then each policy with the named budgets resolved, then the routes checked
    /// against the policies. Errors carry the full path (`policies.payments.retry.budget`,
    /// `budgets.backend.ttl`, `routes[0].policy`).
    ///
    /// ```
    /// # use steadfast_http::config::PolicySetConfig;
    /// let c: PolicySetConfig = serde_json::from_str(r#"{ "policies": { "a": { "retry": { "budget": "nope" } } } }"#)?;
    /// assert_eq!(c.build().unwrap_err().path(), "policies.a.retry.budget");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<PolicySet, ConfigError> {
        self.build_inner(StandardClientLayer::builder, PolicyConfig::http_classifier)
    }

    /// Builds every policy for gRPC ([`GrpcClassifier`], the preset's
    /// [`grpc`](crate::preset::StandardClientBuilder::grpc) settings), as
    /// [`build`](Self::build) does for HTTP.
    ///
    /// ```
    /// # use steadfast_http::config::PolicySetConfig;
    /// let c: PolicySetConfig = serde_json::from_str(r#"{ "policies": { "a": {} } }"#)?;
    /// let set = c.build_grpc()?;
    /// assert!(!set.policy("a").unwrap().adds_idempotency_keys());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_grpc(&self) -> Result<PolicySet<GrpcClassifier>, ConfigError> {
        self.build_inner(
            || StandardClientLayer::builder().grpc(),
            PolicyConfig::grpc_classifier,
        )
    }

    fn build_inner<Cl: Clone>(
        &self,
        preset: fn() -> StandardClientBuilder<Cl>,
        classifier: fn(&PolicyConfig) -> Result<Cl, ConfigError>,
    ) -> Result<PolicySet<Cl>, ConfigError> {
        let mut set = PolicySet {
            budgets: BTreeMap::new(),
            policies: BTreeMap::new(),
            routes: Vec::with_capacity(self.routes.len()),
            matches: Vec::with_capacity(self.routes.len()),
            fallback: self.fallback.clone(),
            configs: self.policies.clone(),
            preset,
            classifier,
        };
        for (name, b) in &self.budgets {
            let budget = b.build().map_err(|e| e.at(&format!("budgets.{name}")))?;
            set.budgets.insert(name.clone(), Arc::new(budget));
        }
        for name in self.policies.keys() {
            let layer = set.fresh(name)?;
            set.policies.insert(name.clone(), layer);
        }
        let known = |name: &str, at: String| {
            if self.policies.contains_key(name) {
                Ok(())
            } else {
                Err(ConfigError::out_of_range(
                    at,
                    name,
                    "the names under `policies`",
                ))
            }
        };
        for (i, entry) in self.routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            let route = entry.to_route().map_err(|e| e.at(&at))?;
            known(route.policy(), format!("{at}.policy"))?;
            set.matches.push(route.to_match().map_err(|e| e.at(&at))?);
            set.routes.push(route);
        }
        if let Some(name) = &self.fallback {
            known(name, "fallback".to_owned())?;
        }
        Ok(set)
    }
}

impl PolicySet {
    /// Reads a policy file in TOML and builds it over HTTP (see [`PolicySetConfig::build`]).
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_toml_str("[policies.a]\ntimeout = \"1s\"")?;
    /// assert!(set.policy("a").is_some());
    /// # Ok::<(), steadfast_http::config::LoadError>(())
    /// ```
    pub fn from_toml_str(text: &str) -> Result<PolicySet, LoadError> {
        Ok(PolicySetConfig::from_toml_str(text)?.build()?)
    }

    /// Reads a policy file in JSON and builds it over HTTP.
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let err = PolicySet::from_json_str(r#"{ "policies": { "a": { "retry": { "max_attempts": "x" } } } }"#).unwrap_err();
    /// assert_eq!(err.path(), "policies.a.retry.max_attempts");
    /// ```
    pub fn from_json_str(text: &str) -> Result<PolicySet, LoadError> {
        Ok(PolicySetConfig::from_json_str(text)?.build()?)
    }

    /// Reads a policy file in YAML and builds it over HTTP.
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_yaml_str("policies:\n  a:\n    retry:\n      max_attempts: 2\n")?;
    /// assert_eq!(set.policy("a").unwrap().max_attempts(), 2);
    /// # Ok::<(), steadfast_http::config::LoadError>(())
    /// ```
    pub fn from_yaml_str(text: &str) -> Result<PolicySet, LoadError> {
        Ok(PolicySetConfig::from_yaml_str(text)?.build()?)
    }

    /// Reads a policy file from disk, in the format its extension names (`.toml`, `.json`,
    /// `.yaml` or `.yml`, see [`Format::of_path`]), and builds it over HTTP. It reads with
    /// `std::fs` (blocking): call it at start-up, or from `spawn_blocking`. A file that cannot
    /// be read is [`LoadError::Io`], with its path; an unknown extension
    /// [`LoadError::UnknownFormat`].
    ///
    /// ```
    /// # use steadfast_http::config::{LoadError, PolicySet};
    /// let file = std::env::temp_dir().join(format!("steadfast-doc-{}.yaml", std::process::id()));
    /// std::fs::write(&file, "policies:\n  a:\n    timeout: 1s\n").unwrap();
    /// let set = PolicySet::from_path(&file)?;
    /// assert!(set.policy("a").is_some());
    /// std::fs::remove_file(&file).unwrap();
    /// let err = PolicySet::from_path(&file).unwrap_err();
    /// assert!(matches!(err, LoadError::Io { kind: std::io::ErrorKind::NotFound, .. }));
    /// # Ok::<(), LoadError>(())
    /// ```
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<PolicySet, LoadError> {
        Ok(PolicySetConfig::from_path(path)?.build()?)
    }
}

impl<Cl> PolicySet<Cl> {
    /// The stack of the policy `name`: clone it for each client (its clones share the retry
    /// budget, breaker state and limits).
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_toml_str("[policies.a]")?;
    /// assert!(set.policy("a").is_some() && set.policy("b").is_none());
    /// # Ok::<(), steadfast_http::config::LoadError>(())
    /// ```
    pub fn policy(&self, name: &str) -> Option<&PolicyLayer<Cl>> {
        self.policies.get(name)
    }

    /// The policies' names, in order.
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_toml_str("[policies.b]\n[policies.a]")?;
    /// assert_eq!(set.names().collect::<Vec<_>>(), ["a", "b"]);
    /// # Ok::<(), steadfast_http::config::LoadError>(())
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.policies.keys().map(String::as_str)
    }

    /// The shared budget `name`, the same `Arc` every policy naming it draws from.
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_toml_str("[budgets.x]\nratio = 0.5\n[policies.a]")?;
    /// assert_eq!(set.budget("x").unwrap().ratio(), 0.5);
    /// # Ok::<(), steadfast_http::config::LoadError>(())
    /// ```
    pub fn budget(&self, name: &str) -> Option<&Arc<RatioBudget>> {
        self.budgets.get(name)
    }

    /// The checked routes, in the file's order (for a router; see [`RouteConfig`]).
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_toml_str("[policies.a]\n[[routes]]\npath = \"/\"\npolicy = \"a\"")?;
    /// assert_eq!(set.routes().len(), 1);
    /// # Ok::<(), steadfast_http::config::LoadError>(())
    /// ```
    pub fn routes(&self) -> &[RouteConfig] {
        &self.routes
    }

    /// The name of the policy that serves requests no route matches (the file's `fallback`).
    ///
    /// ```
    /// # use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_toml_str("fallback = \"a\"\n[policies.a]")?;
    /// assert_eq!(set.fallback(), Some("a"));
    /// # Ok::<(), steadfast_http::config::LoadError>(())
    /// ```
    pub fn fallback(&self) -> Option<&str> {
        self.fallback.as_deref()
    }
}

impl<Cl: Clone> PolicySet<Cl> {
    /// A router layer of the file's `routes`, in order, with the `fallback` policy (if any)
    /// for requests no route matches: apply it to a transport (a hyper-util client) and each
    /// request goes through the stack of the first route that matches (see
    /// [`RouteLayer`]).
    ///
    /// **One instance per route entry**: each route (and the fallback) gets a stack built
    /// afresh from its policy's settings, so each has its own breaker, concurrency limit,
    /// bulkhead, rate limit, and retry budget when the policy writes one inline, even when two
    /// routes name the same policy (Envoy's rule: a breaker opened by one route's failures
    /// does not refuse another's calls). What the file shares is shared: a budget named under
    /// `budgets` is one `Arc` drawn from by every route whose policy names it. The stacks are
    /// also apart from [`policy`](Self::policy)'s. Each call builds new instances; the
    /// returned layer's clones, and every service it makes, share them.
    ///
    /// Fails only as [`RouteLayer`](crate::route::RouteLayerBuilder::build) does: a file
    /// with neither routes nor a fallback has no router (path `routes`).
    ///
    /// ```
    /// use steadfast_http::config::PolicySet;
    /// let set = PolicySet::from_toml_str(r#"
    ///     fallback = "default"
    ///     [policies.default]
    ///     [policies.payments]
    ///     breaker = { consecutive_failures = 5 }
    ///     [[routes]]
    ///     method = "POST"
    ///     path = "/payments/{id}"
    ///     policy = "payments"
    ///     [[routes]]
    ///     path = "/refunds/{id}"
    ///     policy = "payments"            # the same policy, its own breaker
    /// "#)?;
    /// let routes = set.route_layer()?;
    /// assert_eq!(routes.len(), 2);
    /// let empty = PolicySet::from_toml_str("[policies.a]")?;
    /// assert_eq!(empty.route_layer().unwrap_err().path(), "routes");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn route_layer(&self) -> Result<RouteLayer<PolicyLayer<Cl>>, ConfigError> {
        let mut table = RouteLayer::builder();
        for (route, matches) in self.routes.iter().zip(&self.matches) {
            table = table.route(matches.clone(), self.fresh(route.policy())?);
        }
        if let Some(name) = &self.fallback {
            table = table.fallback(self.fresh(name)?);
        }
        table.build()
    }

    /// A new stack of the policy `name` (new breaker, limits, inline budget; the named
    /// budgets shared), errors at `policies.{name}`.
    fn fresh(&self, name: &str) -> Result<PolicyLayer<Cl>, ConfigError> {
        let at = format!("policies.{name}");
        let Some(p) = self.configs.get(name) else {
            return Err(ConfigError::out_of_range(
                at,
                name,
                "the names under `policies`",
            ));
        };
        let find = |budget: &str| self.budgets.get(budget).cloned();
        (self.classifier)(p)
            .and_then(|cl| p.build_with((self.preset)(), cl, &Telemetry::new().name(name), &find))
            .map_err(|e| e.at(&at))
    }
}

impl PolicySetConfig {
    /// Reads a policy file in TOML, without building it; a parse error names the field.
    ///
    /// ```
    /// # use steadfast_http::config::{Format, LoadError, PolicySetConfig};
    /// let err = PolicySetConfig::from_toml_str("[policies.a.retry]\nmax_atempts = 2").unwrap_err();
    /// assert!(matches!(err, LoadError::Parse { format: Format::Toml, .. }));
    /// assert_eq!(err.path(), "policies.a.retry.max_atempts");
    /// ```
    pub fn from_toml_str(text: &str) -> Result<Self, LoadError> {
        let de = toml::Deserializer::parse(text).map_err(|e| LoadError::Parse {
            path: String::new(),
            message: e.to_string(),
            format: Format::Toml,
        })?;
        serde_path_to_error::deserialize(de).map_err(|e| parse_error(e, Format::Toml))
    }

    /// Reads a policy file from disk, in the format its extension names, without building it
    /// (see [`PolicySet::from_path`]).
    ///
    /// ```
    /// # use steadfast_http::config::{LoadError, PolicySetConfig};
    /// let err = PolicySetConfig::from_path("policies.ini").unwrap_err();
    /// assert!(matches!(err, LoadError::UnknownFormat { .. }));
    /// ```
    pub fn from_path(path: impl AsRef<std::path::Path>) -> Result<Self, LoadError> {
        let path = path.as_ref();
        let Some(format) = Format::of_path(path) else {
            return Err(LoadError::UnknownFormat {
                file: path.to_owned(),
            });
        };
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::Io {
            file: path.to_owned(),
            kind: e.kind(),
            message: e.to_string(),
        })?;
        match format {
            Format::Toml => Self::from_toml_str(&text),
            Format::Json => Self::from_json_str(&text),
            Format::Yaml => Self::from_yaml_str(&text),
        }
    }

    /// Reads a policy file in JSON, without building it.
    ///
    /// ```
    /// # use steadfast_http::config::PolicySetConfig;
    /// let err = PolicySetConfig::from_json_str(r#"{ "routes": [ {}, { "policy": 1 } ] }"#).unwrap_err();
    /// assert_eq!(err.path(), "routes[0]");
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self, LoadError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let config =
            serde_path_to_error::deserialize(&mut de).map_err(|e| parse_error(e, Format::Json))?;
        de.end().map_err(|e| LoadError::Parse {
            path: String::new(),
            message: e.to_string(),
            format: Format::Json,
        })?;
        Ok(config)
    }

    /// Reads a policy file in YAML, without building it.
    ///
    /// ```
    /// # use steadfast_http::config::PolicySetConfig;
    /// let err = PolicySetConfig::from_yaml_str("policies:\n  a:\n    breaker:\n      count_window: many\n").unwrap_err();
    /// assert_eq!(err.path(), "policies.a.breaker.count_window");
    /// ```
    pub fn from_yaml_str(text: &str) -> Result<Self, LoadError> {
        let de = serde_norway::Deserializer::from_str(text);
        serde_path_to_error::deserialize(de).map_err(|e| parse_error(e, Format::Yaml))
    }
}

fn parse_error<E: std::fmt::Display>(
    e: serde_path_to_error::Error<E>,
    format: Format,
) -> LoadError {
    let path = e.path().to_string();
    LoadError::Parse {
        path: if path == "." { String::new() } else { path },
        message: e.into_inner().to_string(),
        format,
    }
}

#[cfg(test)]
mod tests;
