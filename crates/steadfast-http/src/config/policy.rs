use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use steadfast_layers::breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
use steadfast_layers::bulkhead::{BulkheadConfig, BulkheadLayer};
use steadfast_layers::limit::{ConcurrencyLimitConfig, ConcurrencyLimitLayer};
use steadfast_layers::rate::{RateLimitConfig, RateLimitLayer};
use steadfast_layers::retry::{RatioBudget, RetryConfig, RetryLayer};
use steadfast_layers::telemetry::Telemetry;
use tower::util::Either;
use tower_layer::{Identity, Stack};

use crate::classify::{GrpcClassifier, HttpClassifier};
use crate::error::ConfigError;
use crate::preset::{StandardClientBuilder, StandardClientLayer};

/// One named policy: the settings of one standard client stack
/// ([`StandardClientLayer`]), every field optional, an absent one keeping the preset's
/// default (10 s deadline, 3 s per attempt, 3 attempts within a Finagle budget, no breaker, no
/// limit).
///
/// ```toml
/// [policies.payments]
/// timeout = "2s"                   # the whole call, all attempts included
/// attempt_timeout = "500ms"        # each attempt
/// retry = { max_attempts = 3, budget = "shared", backoff = { base = "50ms", cap = "1s" } }
/// breaker = { count_window = 20, minimum_calls = 10, break_duration = "5s" }
/// limit = { max_in_flight = 64 }
/// rate_limit = { requests = 100, per = "1s" }
/// ```
///
/// The layers it builds sit in the standard order, outermost first: idempotency key, replay
/// body, deadline (`timeout`), retry, then in the preset's breaker slot the rate limit, the
/// concurrency limit, the bulkhead and the breaker (so that a local refusal is not counted
/// by the breaker as the peer's failure, and each attempt takes its own permit), then the
/// attempt timeout and deadline propagation.
///
/// ```
/// use steadfast_http::config::PolicyConfig;
/// let p: PolicyConfig = serde_json::from_str(r#"{ "timeout": "2s", "retry": { "max_attempts": 2 } }"#)?;
/// let layer = p.build()?;
/// assert_eq!(layer.max_attempts(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PolicyConfig {
    /// The total deadline of a call (default 10 s).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// The timeout of each attempt (default 3 s), or `"off"`: each attempt bounded by the
    /// deadline only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_timeout: Option<AttemptTimeoutConfig>,
    /// The deadline propagation margin (default 10 ms).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub margin: Option<Duration>,
    /// Give each `POST` and `PATCH` an `Idempotency-Key` (default true over HTTP, false for
    /// gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_keys: Option<bool>,
    /// Retry only requests that may be sent twice (default true over HTTP, false for gRPC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent_only: Option<bool>,
    /// Whether an HTTP `Retry-After` replaces the computed backoff (default true, RFC 9110;
    /// HTTP only: gRPC's pushback is part of the protocol, gRFC A6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_retry_after: Option<bool>,
    /// The longest server-asked delay (`Retry-After`, `grpc-retry-pushback-ms`) waited; a
    /// longer one stops the retries as pushback (default 30 s, at most 24 h).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_server_delay: Option<Duration>,
    /// The retry layer (see [`RetryConfig`]; `budget` may name one of the set's `budgets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryConfig>,
    /// A circuit breaker per attempt (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<CircuitBreakerConfig>,
    /// A concurrency limit per attempt (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<ConcurrencyLimitConfig>,
    /// A bulkhead per attempt: a concurrency limit with a bounded queue (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bulkhead: Option<BulkheadConfig>,
    /// A rate limit per attempt (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitConfig>,
}

/// A policy's `attempt_timeout` as a file writes it: a duration (`"500ms"`) or `"off"` (no
/// per-attempt timeout, as
/// [`no_attempt_timeout`](crate::preset::StandardClientBuilder::no_attempt_timeout)).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::config::{AttemptTimeoutConfig, PolicyConfig};
/// let p: PolicyConfig = serde_json::from_str(r#"{ "attempt_timeout": "off" }"#)?;
/// assert_eq!(p.attempt_timeout, Some(AttemptTimeoutConfig::Off));
/// let p: PolicyConfig = serde_json::from_str(r#"{ "attempt_timeout": "250ms" }"#)?;
/// assert_eq!(p.attempt_timeout, Some(AttemptTimeoutConfig::After(Duration::from_millis(250))));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttemptTimeoutConfig {
    /// No per-attempt timeout: each attempt may use the whole remaining deadline.
    Off,
    /// Each attempt's timeout.
    After(Duration),
}

impl From<Duration> for AttemptTimeoutConfig {
    fn from(d: Duration) -> Self {
        AttemptTimeoutConfig::After(d)
    }
}

impl Serialize for AttemptTimeoutConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AttemptTimeoutConfig::Off => s.serialize_str("off"),
            AttemptTimeoutConfig::After(d) => humantime_serde::serialize(d, s),
        }
    }
}

impl<'de> Deserialize<'de> for AttemptTimeoutConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "off" {
            return Ok(AttemptTimeoutConfig::Off);
        }
        humantime_serde::re::humantime::parse_duration(&text)
            .map(AttemptTimeoutConfig::After)
            .map_err(|e| {
                serde::de::Error::custom(format_args!(
                    "{e}: expected a duration (\"500ms\") or \"off\""
                ))
            })
    }
}

/// The layers a policy puts in the preset's breaker slot, outermost first: rate limit,
/// concurrency limit, bulkhead, breaker, each there only when configured
/// ([`Either`] with [`Identity`]).
pub type Backpressure<Cl = HttpClassifier> = Stack<
    Either<CircuitBreakerLayer<Cl>, Identity>,
    Stack<
        Either<BulkheadLayer, Identity>,
        Stack<Either<ConcurrencyLimitLayer, Identity>, Either<RateLimitLayer, Identity>>,
    >,
>;

/// The stack one policy builds: the standard client with its backpressure layers.
pub type PolicyLayer<Cl = HttpClassifier> = StandardClientLayer<Cl, Backpressure<Cl>>;

fn either<L>(layer: Option<L>) -> Either<L, Identity> {
    match layer {
        Some(l) => Either::Left(l),
        None => Either::Right(Identity::new()),
    }
}

impl PolicyConfig {
    /// Builds the HTTP stack (classifier [`HttpClassifier`]), a named retry budget being an
    /// error (there is no set to find it in; see [`PolicySet`](super::PolicySet)).
    ///
    /// ```
    /// # use steadfast_http::config::PolicyConfig;
    /// let p: PolicyConfig = serde_json::from_str(r#"{ "breaker": { "failure_rate": 2.0 } }"#)?;
    /// assert_eq!(p.build().unwrap_err().path(), "breaker.failure_rate");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<PolicyLayer, ConfigError> {
        self.build_with(
            StandardClientLayer::builder(),
            self.http_classifier()?,
            &Telemetry::default(),
            &|_| None,
        )
    }

    /// The HTTP classifier this policy's pushback settings describe.
    pub(super) fn http_classifier(&self) -> Result<HttpClassifier, ConfigError> {
        let mut b = HttpClassifier::builder();
        if let Some(h) = self.honor_retry_after {
            b = b.honor_retry_after(h);
        }
        if let Some(d) = self.max_server_delay {
            b = b.max_server_delay(d);
        }
        b.build()
    }

    /// The gRPC classifier this policy's pushback settings describe.
    pub(super) fn grpc_classifier(&self) -> Result<GrpcClassifier, ConfigError> {
        if self.honor_retry_after.is_some() {
            return Err(ConfigError::conflict(
                "honor_retry_after",
                "gRPC has no Retry-After; its pushback (gRFC A6) is always honoured",
            ));
        }
        let mut b = GrpcClassifier::builder();
        if let Some(d) = self.max_server_delay {
            b = b.max_server_delay(d);
        }
        b.build()
    }

    /// Builds the stack on `preset` (HTTP or gRPC) with `classifier` (the retry's and the
    /// breaker's), finding named budgets with `budgets`; errors are at this policy's fields.
    pub(super) fn build_with<Cl: Clone>(
        &self,
        preset: StandardClientBuilder<Cl>,
        classifier: Cl,
        telemetry: &Telemetry,
        budgets: &dyn Fn(&str) -> Option<Arc<RatioBudget>>,
    ) -> Result<PolicyLayer<Cl>, ConfigError> {
        let mut preset = preset
            .classifier(classifier.clone())
            .telemetry(telemetry.clone());
        if let Some(t) = self.timeout {
            preset = preset.timeout(t);
        }
        match self.attempt_timeout {
            None => {}
            Some(AttemptTimeoutConfig::After(t)) => preset = preset.attempt_timeout(t),
            Some(AttemptTimeoutConfig::Off) => preset = preset.no_attempt_timeout(),
        }
        if let Some(m) = self.margin {
            preset = preset.margin(m);
        }
        if let Some(k) = self.idempotency_keys {
            preset = preset.idempotency_keys(k);
        }
        if let Some(i) = self.idempotent_only {
            preset = preset.idempotent_only(i);
        }
        if let Some(retry) = &self.retry {
            let configured = retry
                .apply_with(RetryLayer::builder(), budgets)
                .map_err(|e| e.at("retry"))?;
            preset = preset.retry(move |_| configured);
        }
        let breaker = match &self.breaker {
            None => None,
            Some(c) => Some(
                c.apply(
                    CircuitBreakerLayer::builder()
                        .classifier(classifier)
                        .telemetry(telemetry.clone()),
                )
                .and_then(|b| b.build())
                .map_err(|e| e.at("breaker"))?,
            ),
        };
        let limit = match &self.limit {
            None => None,
            Some(c) => Some(
                c.apply(
                    ConcurrencyLimitLayer::builder(c.max_in_flight).telemetry(telemetry.clone()),
                )
                .build()
                .map_err(|e| e.at("limit"))?,
            ),
        };
        let bulkhead = match &self.bulkhead {
            None => None,
            Some(c) => Some(
                c.apply(BulkheadLayer::builder(c.max_concurrent).telemetry(telemetry.clone()))
                    .build()
                    .map_err(|e| e.at("bulkhead"))?,
            ),
        };
        let rate = match &self.rate_limit {
            None => None,
            Some(c) => Some(
                c.apply(RateLimitLayer::builder(c.requests, c.per).telemetry(telemetry.clone()))
                    .build()
                    .map_err(|e| e.at("rate_limit"))?,
            ),
        };
        let slot = Stack::new(
            either(breaker),
            Stack::new(either(bulkhead), Stack::new(either(limit), either(rate))),
        );
        preset.breaker(slot).build()
    }
}
