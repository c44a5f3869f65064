use std::time::Duration;

use serde_json::{Map, Value};

use crate::codec::GrpcCode;
use crate::error::{ConfigError, Problem};

/// A6's cap on `maxAttempts`: larger values are treated as 5, without an error.
pub const MAX_ATTEMPTS_CAP: u32 = 5;

/// A parsed and validated gRPC service config: its `methodConfig` list and its
/// `retryThrottling` (the other fields of a service config, such as `loadBalancingConfig`, are
/// the channel's business and are ignored, as unknown fields are).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::grpc_config::{MethodPolicy, ServiceConfig};
///
/// let config = ServiceConfig::from_json(r#"{
///   "methodConfig": [{
///     "name": [{ "service": "helloworld.Greeter", "method": "SayHello" }],
///     "timeout": "1.5s",
///     "retryPolicy": {
///       "maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s",
///       "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
///     }
///   }],
///   "retryThrottling": { "maxTokens": 10, "tokenRatio": 0.1 }
/// }"#)?;
/// let m = config.method_config("helloworld.Greeter", "SayHello").unwrap();
/// assert_eq!(m.timeout, Some(Duration::from_millis(1500)));
/// let Some(MethodPolicy::Retry(r)) = &m.policy else { panic!() };
/// assert_eq!(r.max_attempts, 4);
/// assert!(config.method_config("helloworld.Greeter", "SayBye").is_none());
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The `methodConfig` list, in order.
    pub method_config: Vec<MethodConfig>,
    /// `retryThrottling`: the channel's token bucket, if any.
    pub retry_throttling: Option<RetryThrottling>,
}

/// One `methodConfig` entry: the methods it names and their policy.
///
/// ```
/// use steadfast_http::grpc_config::ServiceConfig;
/// let c = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{}], "timeout": "2s"}]}"#)?;
/// assert!(c.method_config[0].name[0].is_default());
/// assert!(c.method_config[0].policy.is_none());
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MethodConfig {
    /// The methods this entry applies to.
    pub name: Vec<MethodName>,
    /// `timeout`: the deadline of each call, retries and hedges included.
    pub timeout: Option<Duration>,
    /// `retryPolicy` or `hedgingPolicy` (at most one of them).
    pub policy: Option<MethodPolicy>,
}

/// A `name` entry: a service and one of its methods, a whole service (no method), or the
/// default for every method (no service).
///
/// ```
/// use steadfast_http::grpc_config::MethodName;
/// assert_eq!(MethodName::method("pkg.Svc", "Do").to_string(), "pkg.Svc/Do");
/// assert_eq!(MethodName::service("pkg.Svc").to_string(), "pkg.Svc/*");
/// assert!(MethodName::default().is_default());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct MethodName {
    /// The service, `pkg.Service`; empty for the default entry.
    pub service: String,
    /// The method; `None` for every method of the service.
    pub method: Option<String>,
}

impl MethodName {
    /// A name for every method of `service`.
    ///
    /// ```
    /// # use steadfast_http::grpc_config::MethodName;
    /// assert_eq!(MethodName::service("a.B").method, None);
    /// ```
    pub fn service(service: impl Into<String>) -> Self {
        MethodName {
            service: service.into(),
            method: None,
        }
    }

    /// A name for `service`'s `method`.
    ///
    /// ```
    /// # use steadfast_http::grpc_config::MethodName;
    /// assert_eq!(MethodName::method("a.B", "C").method.as_deref(), Some("C"));
    /// ```
    pub fn method(service: impl Into<String>, method: impl Into<String>) -> Self {
        MethodName {
            service: service.into(),
            method: Some(method.into()),
        }
    }

    /// Whether this is the default entry (`{}`: every method of every service).
    ///
    /// ```
    /// # use steadfast_http::grpc_config::MethodName;
    /// assert!(!MethodName::service("a.B").is_default());
    /// ```
    pub fn is_default(&self) -> bool {
        self.service.is_empty()
    }
}

impl std::fmt::Display for MethodName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.service, &self.method) {
            (s, _) if s.is_empty() => f.write_str("*"),
            (s, Some(m)) => write!(f, "{s}/{m}"),
            (s, None) => write!(f, "{s}/*"),
        }
    }
}

/// A method's policy: retries or hedging, never both (A6).
///
/// ```
/// use steadfast_http::grpc_config::{MethodPolicy, ServiceConfig};
/// let c = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"service": "a.B"}],
///   "hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.05s"}}]}"#)?;
/// assert!(matches!(c.method_config[0].policy, Some(MethodPolicy::Hedging(_))));
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum MethodPolicy {
    /// `retryPolicy`.
    Retry(RetryPolicy),
    /// `hedgingPolicy`.
    Hedging(HedgingPolicy),
}

/// `retryPolicy` (A6): every field is required.
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::{codec::GrpcCode, grpc_config::{MethodPolicy, ServiceConfig}};
/// let c = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"service": "a.B"}],
///   "retryPolicy": {"maxAttempts": 9, "initialBackoff": "0.01s", "maxBackoff": "0.3s",
///   "backoffMultiplier": 1.5, "retryableStatusCodes": ["UNAVAILABLE", 10]}}]}"#)?;
/// let Some(MethodPolicy::Retry(r)) = &c.method_config[0].policy else { panic!() };
/// assert_eq!(r.max_attempts, 5); // capped, as A6 says
/// assert_eq!(r.initial_backoff, Duration::from_millis(10));
/// assert_eq!(r.retryable_status_codes, [GrpcCode::Unavailable, GrpcCode::Aborted]);
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// `maxAttempts`: attempts per call, the first included, in `[2, 5]` (larger is 5).
    pub max_attempts: u32,
    /// `initialBackoff`: the upper bound of the first retry's random delay (> 0).
    pub initial_backoff: Duration,
    /// `maxBackoff`: the cap on every retry's upper bound (> 0).
    pub max_backoff: Duration,
    /// `backoffMultiplier`: the growth of the upper bound per retry (> 0).
    pub backoff_multiplier: f64,
    /// `retryableStatusCodes`: the codes that are retried (at least one).
    pub retryable_status_codes: Vec<GrpcCode>,
}

/// `hedgingPolicy` (A6).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::grpc_config::{MethodPolicy, ServiceConfig};
/// let c = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"service": "a.B"}],
///   "hedgingPolicy": {"maxAttempts": 2}}]}"#)?;
/// let Some(MethodPolicy::Hedging(h)) = &c.method_config[0].policy else { panic!() };
/// assert_eq!(h.hedging_delay, Duration::ZERO); // the default: all attempts at once
/// assert!(h.non_fatal_status_codes.is_empty());
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HedgingPolicy {
    /// `maxAttempts`: the original and its hedges, in `[2, 5]` (larger is 5).
    pub max_attempts: u32,
    /// `hedgingDelay`: the wait before each further attempt (default 0).
    pub hedging_delay: Duration,
    /// `nonFatalStatusCodes`: the codes that do not end the call (default none).
    pub non_fatal_status_codes: Vec<GrpcCode>,
}

/// `retryThrottling` (A6): a token bucket shared by every call of the channel.
///
/// ```
/// use steadfast_http::grpc_config::ServiceConfig;
/// let c = ServiceConfig::from_json(r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#)?;
/// assert_eq!(c.retry_throttling.unwrap().max_tokens, 10.0);
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RetryThrottling {
    /// `maxTokens`, in `(0, 1000]`; the bucket starts full.
    pub max_tokens: f64,
    /// `tokenRatio`: tokens returned per success (> 0, three decimal places kept).
    pub token_ratio: f64,
}

impl ServiceConfig {
    /// Parses and validates a service config in JSON, with A6's rules: `maxAttempts` greater
    /// than 1 (capped at 5), `initialBackoff` and `maxBackoff` greater than zero,
    /// `backoffMultiplier` greater than zero, `retryableStatusCodes` not empty, not both
    /// `retryPolicy` and `hedgingPolicy`, `maxTokens` in `(0, 1000]`, `tokenRatio` greater than
    /// zero (three decimal places kept), no name twice, no `method` without a `service`, at
    /// least one name per entry (service_config.md).
    /// Durations are proto JSON strings (`"1.5s"`); status codes are names (`"UNAVAILABLE"`,
    /// any case) or numbers. Unknown fields are ignored. The error's path names the field as
    /// it is spelled in the JSON: `methodConfig[1].retryPolicy.maxAttempts`.
    ///
    /// ```
    /// use steadfast_http::grpc_config::ServiceConfig;
    /// let err = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"service": "a.B"}],
    ///   "retryPolicy": {"maxAttempts": 1, "initialBackoff": "1s", "maxBackoff": "1s",
    ///   "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#).unwrap_err();
    /// assert_eq!(err.path(), "methodConfig[0].retryPolicy.maxAttempts");
    /// ```
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let value: Value = serde_json::from_str(json).map_err(|e| {
            ConfigError::new(
                "json",
                Problem::OutOfRange {
                    value: e.to_string(),
                    accepted: "a service config in JSON",
                },
            )
        })?;
        Self::from_value(&value)
    }

    /// Validates a service config already parsed as a JSON value (see
    /// [`from_json`](Self::from_json)).
    ///
    /// ```
    /// use steadfast_http::grpc_config::ServiceConfig;
    /// let err = ServiceConfig::from_value(&serde_json::json!([])).unwrap_err();
    /// assert_eq!(err.path(), "serviceConfig");
    /// ```
    pub fn from_value(value: &Value) -> Result<Self, ConfigError> {
        let root = object(value, "serviceConfig")?;
        let mut config = ServiceConfig::default();
        if let Some(list) = field(root, "methodConfig") {
            let list = array(list, "methodConfig")?;
            let mut seen: Vec<(MethodName, String)> = Vec::new();
            for (i, entry) in list.iter().enumerate() {
                let path = format!("methodConfig[{i}]");
                let mc = method_config(entry, &path)?;
                for (j, name) in mc.name.iter().enumerate() {
                    if seen.iter().any(|(n, _)| n == name) {
                        return Err(ConfigError::conflict(
                            format!("{path}.name[{j}]"),
                            "this name appears in an earlier name entry: each name once",
                        ));
                    }
                    seen.push((name.clone(), path.clone()));
                }
                config.method_config.push(mc);
            }
        }
        if let Some(t) = field(root, "retryThrottling") {
            config.retry_throttling = Some(retry_throttling(t, "retryThrottling")?);
        }
        Ok(config)
    }

    /// The entry that applies to `service`'s `method`, by A6's rule: the entry naming the
    /// service and the method, else the one naming the whole service, else the default entry
    /// (`{}`), else none.
    ///
    /// ```
    /// use steadfast_http::grpc_config::ServiceConfig;
    /// let c = ServiceConfig::from_json(r#"{"methodConfig": [
    ///   {"name": [{}], "timeout": "9s"},
    ///   {"name": [{"service": "a.B"}], "timeout": "2s"},
    ///   {"name": [{"service": "a.B", "method": "C"}], "timeout": "1s"}]}"#)?;
    /// let t = |s: &str, m: &str| c.method_config(s, m).unwrap().timeout.unwrap().as_secs();
    /// assert_eq!(t("a.B", "C"), 1);
    /// assert_eq!(t("a.B", "D"), 2);
    /// assert_eq!(t("x.Y", "C"), 9);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn method_config(&self, service: &str, method: &str) -> Option<&MethodConfig> {
        let find = |pred: &dyn Fn(&MethodName) -> bool| {
            self.method_config
                .iter()
                .find(|mc| mc.name.iter().any(pred))
        };
        find(&|n| n.service == service && n.method.as_deref() == Some(method))
            .or_else(|| find(&|n| n.service == service && n.method.is_none()))
            .or_else(|| find(&|n| n.is_default()))
    }
}

fn method_config(v: &Value, path: &str) -> Result<MethodConfig, ConfigError> {
    let o = object(v, path)?;
    let mut mc = MethodConfig::default();
    // service_config.md: "There must be at least one name."
    let npath = format!("{path}.name");
    let names =
        field(o, "name").ok_or_else(|| ConfigError::conflict(npath.clone(), "is required"))?;
    for (j, n) in array(names, &npath)?.iter().enumerate() {
        mc.name.push(method_name(n, &format!("{npath}[{j}]"))?);
    }
    if mc.name.is_empty() {
        return Err(ConfigError::conflict(npath, "must hold at least one name"));
    }
    if let Some(t) = field(o, "timeout") {
        mc.timeout = Some(duration(t, &format!("{path}.timeout"))?);
    }
    let retry = field(o, "retryPolicy");
    let hedging = field(o, "hedgingPolicy");
    mc.policy = match (retry, hedging) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::conflict(
                format!("{path}.hedgingPolicy"),
                "retryPolicy and hedgingPolicy are mutually exclusive",
            ))
        }
        (Some(r), None) => Some(MethodPolicy::Retry(retry_policy(
            r,
            &format!("{path}.retryPolicy"),
        )?)),
        (None, Some(h)) => Some(MethodPolicy::Hedging(hedging_policy(
            h,
            &format!("{path}.hedgingPolicy"),
        )?)),
        (None, None) => None,
    };
    Ok(mc)
}

fn method_name(v: &Value, path: &str) -> Result<MethodName, ConfigError> {
    let o = object(v, path)?;
    let service = match field(o, "service") {
        Some(s) => string(s, &format!("{path}.service"))?.to_owned(),
        None => String::new(),
    };
    let method = match field(o, "method") {
        Some(m) => Some(string(m, &format!("{path}.method"))?.to_owned()),
        None => None,
    }
    .filter(|m| !m.is_empty());
    if service.is_empty() && method.is_some() {
        return Err(ConfigError::conflict(
            format!("{path}.method"),
            "a method needs its service (only the default entry has no service)",
        ));
    }
    for (what, s) in [("service", Some(&service)), ("method", method.as_ref())] {
        if s.is_some_and(|s| s.contains('/')) {
            return Err(ConfigError::conflict(
                format!("{path}.{what}"),
                "must not contain '/'",
            ));
        }
    }
    Ok(MethodName { service, method })
}

fn retry_policy(v: &Value, path: &str) -> Result<RetryPolicy, ConfigError> {
    let o = object(v, path)?;
    let p = |f: &str| format!("{path}.{f}");
    let max_attempts = max_attempts(required(o, "maxAttempts", path)?, &p("maxAttempts"))?;
    let initial_backoff = positive(
        duration(required(o, "initialBackoff", path)?, &p("initialBackoff"))?,
        &p("initialBackoff"),
    )?;
    let max_backoff = positive(
        duration(required(o, "maxBackoff", path)?, &p("maxBackoff"))?,
        &p("maxBackoff"),
    )?;
    let backoff_multiplier = number(
        required(o, "backoffMultiplier", path)?,
        &p("backoffMultiplier"),
    )?;
    if backoff_multiplier <= 0.0 {
        return Err(out_of_range(
            &p("backoffMultiplier"),
            backoff_multiplier,
            "(0, +inf)",
        ));
    }
    let retryable_status_codes = codes(
        required(o, "retryableStatusCodes", path)?,
        &p("retryableStatusCodes"),
    )?;
    if retryable_status_codes.is_empty() {
        return Err(ConfigError::conflict(
            p("retryableStatusCodes"),
            "must name at least one status code",
        ));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_status_codes,
    })
}

fn hedging_policy(v: &Value, path: &str) -> Result<HedgingPolicy, ConfigError> {
    let o = object(v, path)?;
    let p = |f: &str| format!("{path}.{f}");
    let max_attempts = max_attempts(required(o, "maxAttempts", path)?, &p("maxAttempts"))?;
    let hedging_delay = match field(o, "hedgingDelay") {
        Some(d) => duration(d, &p("hedgingDelay"))?,
        None => Duration::ZERO,
    };
    let non_fatal_status_codes = match field(o, "nonFatalStatusCodes") {
        Some(c) => codes(c, &p("nonFatalStatusCodes"))?,
        None => Vec::new(),
    };
    Ok(HedgingPolicy {
        max_attempts,
        hedging_delay,
        non_fatal_status_codes,
    })
}

fn retry_throttling(v: &Value, path: &str) -> Result<RetryThrottling, ConfigError> {
    let o = object(v, path)?;
    let p = |f: &str| format!("{path}.{f}");
    let max_tokens = number(required(o, "maxTokens", path)?, &p("maxTokens"))?;
    if max_tokens <= 0.0 || max_tokens > 1000.0 {
        return Err(out_of_range(&p("maxTokens"), max_tokens, "(0, 1000]"));
    }
    let token_ratio = number(required(o, "tokenRatio", path)?, &p("tokenRatio"))?;
    if token_ratio <= 0.0 {
        return Err(out_of_range(&p("tokenRatio"), token_ratio, "(0, +inf)"));
    }
    // A6: "tokenRatio ... up to 3 decimal places; more precision is truncated".
    let token_ratio = (token_ratio * 1000.0).trunc() / 1000.0;
    if token_ratio == 0.0 {
        return Err(out_of_range(
            &p("tokenRatio"),
            token_ratio,
            "at least 0.001 (three decimal places are kept)",
        ));
    }
    Ok(RetryThrottling {
        max_tokens,
        token_ratio,
    })
}

fn max_attempts(v: &Value, path: &str) -> Result<u32, ConfigError> {
    let n = v.as_u64().filter(|_| v.is_number()).ok_or_else(|| {
        ConfigError::new(
            path.to_owned(),
            Problem::OutOfRange {
                value: v.to_string(),
                accepted: "an integer greater than 1",
            },
        )
    })?;
    if n <= 1 {
        return Err(out_of_range(path, n, "an integer greater than 1"));
    }
    Ok(u32::try_from(n.min(u64::from(MAX_ATTEMPTS_CAP))).unwrap_or(MAX_ATTEMPTS_CAP))
}

fn codes(v: &Value, path: &str) -> Result<Vec<GrpcCode>, ConfigError> {
    let mut out = Vec::new();
    for (i, c) in array(v, path)?.iter().enumerate() {
        let code = status_code(c).ok_or_else(|| {
            ConfigError::new(
                format!("{path}[{i}]"),
                Problem::OutOfRange {
                    value: c.to_string(),
                    accepted: "a status code name (\"UNAVAILABLE\") or number (0 to 16)",
                },
            )
        })?;
        if !out.contains(&code) {
            out.push(code);
        }
    }
    Ok(out)
}

/// A status code from its name (any case, `"UNAVAILABLE"`) or its number (`14`).
fn status_code(v: &Value) -> Option<GrpcCode> {
    let all = (0..=16).map(GrpcCode::from_u32);
    match v {
        Value::String(s) => all.into_iter().find(|c| s.eq_ignore_ascii_case(c.label())),
        Value::Number(n) => {
            let n = u32::try_from(n.as_u64()?).ok()?;
            (n <= 16).then(|| GrpcCode::from_u32(n))
        }
        _ => None,
    }
}

/// A proto JSON duration: a decimal number of seconds with up to nine fractional digits and the
/// suffix `s` (`"1s"`, `"0.25s"`, `".1s"`, `"1.000000001s"`); negative durations are rejected.
fn duration(v: &Value, path: &str) -> Result<Duration, ConfigError> {
    let bad = || {
        ConfigError::new(
            path.to_owned(),
            Problem::OutOfRange {
                value: v.to_string(),
                accepted: "a non-negative proto JSON duration such as \"1.5s\"",
            },
        )
    };
    let s = v.as_str().ok_or_else(bad)?;
    let body = s.strip_suffix('s').ok_or_else(bad)?;
    let (secs, frac) = match body.split_once('.') {
        Some((a, b)) => (a, b),
        None => (body, ""),
    };
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    // A6's own examples write ".1s": the integer part may be left out when a fraction follows.
    if (secs.is_empty() && frac.is_empty()) || !digits(secs) || !digits(frac) || frac.len() > 9 {
        return Err(bad());
    }
    if body.ends_with('.') {
        return Err(bad());
    }
    let secs: u64 = if secs.is_empty() {
        0
    } else {
        secs.parse().map_err(|_| bad())?
    };
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    // The proto `Duration` range: up to 10,000 years.
    if secs > 315_576_000_000 {
        return Err(bad());
    }
    Ok(Duration::new(secs, nanos))
}

fn positive(d: Duration, path: &str) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::zero(path.to_owned()));
    }
    Ok(d)
}

fn number(v: &Value, path: &str) -> Result<f64, ConfigError> {
    v.as_f64().filter(|f| f.is_finite()).ok_or_else(|| {
        ConfigError::new(
            path.to_owned(),
            Problem::OutOfRange {
                value: v.to_string(),
                accepted: "a number",
            },
        )
    })
}

fn string<'a>(v: &'a Value, path: &str) -> Result<&'a str, ConfigError> {
    v.as_str().ok_or_else(|| {
        ConfigError::new(
            path.to_owned(),
            Problem::OutOfRange {
                value: v.to_string(),
                accepted: "a string",
            },
        )
    })
}

fn object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    v.as_object().ok_or_else(|| {
        ConfigError::new(
            path.to_owned(),
            Problem::OutOfRange {
                value: v.to_string(),
                accepted: "a JSON object",
            },
        )
    })
}

fn array<'a>(v: &'a Value, path: &str) -> Result<&'a Vec<Value>, ConfigError> {
    v.as_array().ok_or_else(|| {
        ConfigError::new(
            path.to_owned(),
            Problem::OutOfRange {
                value: v.to_string(),
                accepted: "a JSON array",
            },
        )
    })
}

/// A field, `null` counted as absent (as proto JSON does).
fn field<'a>(o: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    o.get(name).filter(|v| !v.is_null())
}

fn required<'a>(
    o: &'a Map<String, Value>,
    name: &'static str,
    path: &str,
) -> Result<&'a Value, ConfigError> {
    field(o, name).ok_or_else(|| ConfigError::conflict(format!("{path}.{name}"), "is required"))
}

fn out_of_range(path: &str, value: impl std::fmt::Display, accepted: &'static str) -> ConfigError {
    ConfigError::new(
        path.to_owned(),
        Problem::OutOfRange {
            value: value.to_string(),
            accepted,
        },
    )
}
