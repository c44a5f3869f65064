use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// One entry of a policy file's `routes`, as written: an HTTP route
/// (`{ method = "GET", path = "/users/{id}", policy = "search" }`, the method optional) or a
/// gRPC one (`{ grpc = "pkg.Service/Method", policy = "payments" }`, or `"pkg.Service"` for
/// every method of a service). Read into a [`RouteConfig`] by
/// [`PolicySetConfig::build`](super::PolicySetConfig::build), which checks it.
///
/// ```
/// use steadfast_http::config::RouteEntry;
/// let r: RouteEntry = serde_json::from_str(r#"{ "grpc": "pkg.Payments", "policy": "payments" }"#)?;
/// assert_eq!(r.policy, "payments");
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RouteEntry {
    /// The HTTP method (any method when absent); HTTP routes only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// The HTTP path pattern: `/users/{id}` (`{name}` matches one segment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The gRPC service and method (`pkg.Service/Method`), or service (`pkg.Service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<String>,
    /// The name of the policy under `policies` that serves the route.
    pub policy: String,
}

/// A checked route: which requests a policy serves. A router (per-route policies) consumes
/// these in order; this module only reads and checks them.
///
/// ```
/// use steadfast_http::config::{PolicySet, RouteConfig};
/// let set = PolicySet::from_toml_str(r#"
///     [policies.search]
///     [[routes]]
///     method = "GET"
///     path = "/users/{id}"
///     policy = "search"
///     [[routes]]
///     grpc = "pkg.Search/Find"
///     policy = "search"
/// "#)?;
/// assert_eq!(set.routes()[0], RouteConfig::Http { method: Some(http::Method::GET), path: "/users/{id}".into(), policy: "search".into() });
/// assert_eq!(set.routes()[1], RouteConfig::Grpc { service: "pkg.Search".into(), method: Some("Find".into()), policy: "search".into() });
/// # Ok::<(), steadfast_http::config::LoadError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RouteConfig {
    /// An HTTP route.
    Http {
        /// The method, or any.
        method: Option<http::Method>,
        /// The path pattern, starting with `/`.
        path: String,
        /// The policy's name.
        policy: String,
    },
    /// A gRPC route.
    Grpc {
        /// The fully qualified service (`pkg.Service`).
        service: String,
        /// The method, or every method of the service.
        method: Option<String>,
        /// The policy's name.
        policy: String,
    },
}

impl RouteConfig {
    /// The name of the policy that serves the route.
    ///
    /// ```
    /// # use steadfast_http::config::RouteConfig;
    /// let r = RouteConfig::Http { method: None, path: "/".into(), policy: "default".into() };
    /// assert_eq!(r.policy(), "default");
    /// ```
    pub fn policy(&self) -> &str {
        match self {
            RouteConfig::Http { policy, .. } | RouteConfig::Grpc { policy, .. } => policy,
        }
    }
}

impl RouteEntry {
    /// Checks the entry (errors at `method`, `path`, `grpc`; the policy name is checked by
    /// the set) and makes it a [`RouteConfig`].
    ///
    /// ```
    /// # use steadfast_http::config::RouteEntry;
    /// let r: RouteEntry = serde_json::from_str(r#"{ "path": "users", "policy": "p" }"#).unwrap();
    /// assert_eq!(r.to_route().unwrap_err().path(), "path");
    /// ```
    pub fn to_route(&self) -> Result<RouteConfig, ConfigError> {
        match (&self.path, &self.grpc) {
            (Some(_), Some(_)) => Err(ConfigError::conflict(
                "grpc",
                "a route has either an HTTP `path` or a `grpc` service",
            )),
            (None, None) => Err(ConfigError::conflict(
                "path",
                "a route needs an HTTP `path` or a `grpc` service",
            )),
            (Some(path), None) => {
                if !path.starts_with('/') {
                    return Err(ConfigError::out_of_range(
                        "path",
                        path,
                        "paths starting with `/`",
                    ));
                }
                let method = match &self.method {
                    None => None,
                    Some(m) => Some(http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                        ConfigError::out_of_range("method", m, "HTTP method tokens")
                    })?),
                };
                Ok(RouteConfig::Http {
                    method,
                    path: path.clone(),
                    policy: self.policy.clone(),
                })
            }
            (None, Some(grpc)) => {
                if self.method.is_some() {
                    return Err(ConfigError::conflict(
                        "method",
                        "a gRPC route names its method in `grpc` (`pkg.Service/Method`)",
                    ));
                }
                let (service, method) = match grpc.split_once('/') {
                    Some((s, m)) => (s, Some(m)),
                    None => (grpc.as_str(), None),
                };
                let valid = |s: &str| {
                    !s.is_empty()
                        && s.split('.').all(|part| {
                            !part.is_empty()
                                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                        })
                };
                if !valid(service) || method.is_some_and(|m| !valid(m) || m.contains('.')) {
                    return Err(ConfigError::out_of_range(
                        "grpc",
                        grpc,
                        "`pkg.Service` or `pkg.Service/Method`",
                    ));
                }
                Ok(RouteConfig::Grpc {
                    service: service.to_owned(),
                    method: method.map(str::to_owned),
                    policy: self.policy.clone(),
                })
            }
        }
    }
}
