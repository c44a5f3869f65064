use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::route::RouteMatch;

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

/// A checked route: which requests a policy serves.
/// [`PolicySet::route_layer`](super::PolicySet::route_layer) makes a router of them, in
/// order, each through [`to_match`](Self::to_match).
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

impl RouteConfig {
    /// The [`RouteMatch`] this route makes: the one place a route of a file becomes a
    /// router's match, through [`RouteMatch::http`] (and [`method`](RouteMatch::method)) or
    /// [`RouteMatch::grpc`], whose parser alone judges the pattern. A bad pattern is an error
    /// at `path`, a bad gRPC name at `grpc`.
    ///
    /// ```
    /// # use steadfast_http::config::RouteConfig;
    /// let r = RouteConfig::Http { method: Some(http::Method::GET), path: "/users/{id}".into(), policy: "p".into() };
    /// assert!(r.to_match()?.matches(&http::Method::GET, "/users/7"));
    /// let bad = RouteConfig::Http { method: None, path: "/files/*/x".into(), policy: "p".into() };
    /// assert_eq!(bad.to_match().unwrap_err().path(), "path");
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn to_match(&self) -> Result<RouteMatch, ConfigError> {
        match self {
            RouteConfig::Http { method, path, .. } => {
                let m = RouteMatch::http(path).map_err(|e| renamed(e, "path"))?;
                Ok(match method {
                    Some(method) => m.method(method.clone()),
                    None => m,
                })
            }
            RouteConfig::Grpc {
                service, method, ..
            } => RouteMatch::grpc(service, method.as_deref()).map_err(|e| renamed(e, "grpc")),
        }
    }
}

/// The same problem, at the file's field (`path`, `grpc`) instead of the matcher's argument.
fn renamed(e: ConfigError, field: &'static str) -> ConfigError {
    ConfigError::new(field, e.problem().clone())
}

impl RouteEntry {
    /// Checks the entry (errors at `method`, `path`, `grpc`; the policy name is checked by
    /// the set) and makes it a [`RouteConfig`]; the pattern is judged by the router's own
    /// parser ([`RouteConfig::to_match`]).
    ///
    /// ```
    /// # use steadfast_http::config::RouteEntry;
    /// let r: RouteEntry = serde_json::from_str(r#"{ "path": "users", "policy": "p" }"#).unwrap();
    /// assert_eq!(r.to_route().unwrap_err().path(), "path");
    /// let r: RouteEntry = serde_json::from_str(r#"{ "grpc": "pkg..Svc", "policy": "p" }"#).unwrap();
    /// assert_eq!(r.to_route().unwrap_err().path(), "grpc");
    /// ```
    pub fn to_route(&self) -> Result<RouteConfig, ConfigError> {
        let route = match (&self.path, &self.grpc) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::conflict(
                    "grpc",
                    "a route has either an HTTP `path` or a `grpc` service",
                ))
            }
            (None, None) => {
                return Err(ConfigError::conflict(
                    "path",
                    "a route needs an HTTP `path` or a `grpc` service",
                ))
            }
            (Some(path), None) => {
                let method = match &self.method {
                    None => None,
                    Some(m) => Some(http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                        ConfigError::out_of_range("method", m, "HTTP method tokens")
                    })?),
                };
                RouteConfig::Http {
                    method,
                    path: path.clone(),
                    policy: self.policy.clone(),
                }
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
                RouteConfig::Grpc {
                    service: service.to_owned(),
                    method: method.map(str::to_owned),
                    policy: self.policy.clone(),
                }
            }
        };
        route.to_match()?;
        Ok(route)
    }
}
