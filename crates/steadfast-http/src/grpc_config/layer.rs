use std::sync::Arc;
use std::time::Duration;

use steadfast_layers::deadline::{DeadlineLayer, DeadlineService, HttpExtensions};
use steadfast_layers::hedge::{ByOutcome, Hedge, HedgeAny, HedgeDelay, HedgeLayer};
use steadfast_layers::retry::{Backoff, Jitter, RetryBudget, TokenBucket, MAX_BACKOFF};
use tower_layer::{Identity, Layer};

use super::config::{HedgingPolicy, MethodConfig, MethodPolicy, RetryPolicy, ServiceConfig};
use super::service::{MethodStack, ThrottleRecord, ThrottleRecordLayer};
use crate::body::{HttpReplay, ReplayBodyLayer, WithReplayBody, DEFAULT_REPLAY_LIMIT};
use crate::classify::{GrpcClassifier, GrpcClassifierBuilder};
use crate::codec::GrpcCode;
use crate::error::ConfigError;
use crate::preset::{
    StandardClient, StandardClientLayer, Tonic, TonicBody, TonicStatus, Transport, DEFAULT_TIMEOUT,
};
use crate::propagate::{DeadlinePropagation, DeadlinePropagationLayer};
use crate::route::{RouteLayer, RouteMatch, Router};

/// The hedge delay used for `hedgingDelay: "0s"` (A6: every attempt at once): 1 ms, the
/// resolution of tokio's timers.
pub const ZERO_HEDGING_DELAY: Duration = Duration::from_millis(1);

/// A gRPC service config as steadfast stacks over a tonic `Channel`: one stack per
/// `methodConfig` entry, chosen per call by A6's rule (the entry naming the service and
/// method, else the service, else the default entry `{}`), through a
/// [`Router`](crate::route::Router) keyed by the request path `/pkg.Service/Method`.
///
/// - **`retryPolicy`**: the standard tonic preset ([`StandardClientLayer::builder`]`.tonic()`)
///   with `maxAttempts` attempts, [`Backoff::exponential`] from `initialBackoff` to
///   `maxBackoff` growing by `backoffMultiplier`, with full jitter (A6's "random between 0 and
///   `min(initialBackoff * backoffMultiplier^(n-1), maxBackoff)`"), and a [`GrpcClassifier`]
///   that retries exactly `retryableStatusCodes` (A6 retries no other code; every other
///   non-`OK` code ends the call at once). No per-attempt timeout (A6 has none).
/// - **`hedgingPolicy`**: the same skeleton with a hedge layer: `maxAttempts - 1` hedges, one
///   every `hedgingDelay` (`"0s"` is [`ZERO_HEDGING_DELAY`]), every call eligible (the config
///   says the method is safe to send twice), each attempt judged as A6 says
///   ([`ByOutcome`]) by a [`GrpcClassifier`] for which exactly `nonFatalStatusCodes` are
///   non-fatal: the first success wins; a status not in `nonFatalStatusCodes` (or a broken
///   connection, unless `UNAVAILABLE` is listed) is returned at once and the other attempts
///   are cancelled; a non-fatal status sends the next hedge at once; server pushback
///   (`grpc-retry-pushback-ms` on a non-fatal status) sends it that many milliseconds later
///   instead, or, negative or malformed, stops hedging (the attempts in flight go on); on a
///   fatal status it changes nothing (the call ends). When every attempt sent has failed
///   non-fatally and no hedge is left, the call returns the last failure. A pushback over 24 h
///   (steadfast's longest server delay) stops hedging as a negative one does.
/// - **no policy**: the same stack with one attempt: the timeout only.
/// - **`timeout`**: the call's deadline, retries and hedges included; a method without one
///   gets [`default_timeout`](ServiceConfigLayerBuilder::default_timeout) (default
///   [`DEFAULT_TIMEOUT`], 10 s), as does a method no entry names.
/// - **`retryThrottling`**: one [`TokenBucket`] for the whole channel, drawn on by every
///   retry and every hedge of every method; each attempt that fails with a retryable
///   (non-fatal) code takes a token, each success returns `tokenRatio`, and retries and hedges
///   stop while half the tokens or fewer remain. Without it, retries and hedges have no budget
///   (as in A6).
///
/// Validation beyond A6's: steadfast's backoff grows by a factor in `[1, 100]`, and its delays
/// are at most one day, so a `backoffMultiplier` outside `[1, 100]` or a `maxBackoff` over a
/// day is a [`ConfigError`] here (valid for A6, but not built approximately).
///
/// ```
/// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
/// let config = ServiceConfig::from_json(r#"{
///   "methodConfig": [
///     {"name": [{"service": "demo.Search"}], "timeout": "2s",
///      "retryPolicy": {"maxAttempts": 3, "initialBackoff": "0.05s", "maxBackoff": "0.5s",
///                      "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}},
///     {"name": [{"service": "demo.Quote", "method": "Get"}],
///      "hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "0.02s"}}],
///   "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#)?;
/// let layer = ServiceConfigLayer::new(&config)?;
/// assert_eq!(layer.routes(), 2);
/// assert_eq!(layer.throttle().unwrap().tokens(), 10.0);
/// // `tower::Layer::layer(&layer, channel)`, then hand it to generated code: `SearchClient::new(..)`.
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ServiceConfigLayer {
    routes: RouteLayer<MethodLayer>,
    throttle: Option<Arc<TokenBucket>>,
}

/// The service a [`ServiceConfigLayer`] builds over a transport `S` (a tonic `Channel`).
pub type ServiceConfigClient<S> = Router<MethodService<S>>;

/// One method's stack over `S`: the retrying or the hedging stack.
pub type MethodService<S> = MethodStack<RetryingService<S>, HedgingService<S>>;

/// The retrying stack over `S`: the standard tonic preset.
pub type RetryingService<S> = StandardClient<S, GrpcClassifier, Identity, Tonic>;

/// The hedging stack over `S`, outermost first: tonic errors, the replayable body, the
/// deadline, the hedge, the throttling record of each attempt, deadline propagation, tonic's
/// body.
pub type HedgingService<S> = TonicStatus<
    WithReplayBody<
        DeadlineService<
            Hedge<
                ThrottleRecord<DeadlinePropagation<TonicBody<S>>>,
                ByOutcome<HedgeAny>,
                GrpcClassifier,
                HttpReplay,
            >,
            HttpExtensions,
        >,
    >,
>;

impl ServiceConfigLayer {
    /// The stacks of `config`, with the defaults of [`builder`](Self::builder).
    ///
    /// ```
    /// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
    /// let layer = ServiceConfigLayer::new(&ServiceConfig::default())?;
    /// assert_eq!(layer.routes(), 0); // every call to the default stack: one attempt, 10 s
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn new(config: &ServiceConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder for the stacks of `config`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
    /// let layer = ServiceConfigLayer::builder(&ServiceConfig::default())
    ///     .default_timeout(Duration::from_secs(30))
    ///     .seed(7)
    ///     .build()?;
    /// # let _ = layer;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder(config: &ServiceConfig) -> ServiceConfigLayerBuilder<'_> {
        ServiceConfigLayerBuilder {
            config,
            default_timeout: DEFAULT_TIMEOUT,
            seed: None,
        }
    }

    /// How many routes the table holds: one per name that is not the default entry.
    ///
    /// ```
    /// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
    /// let c = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"service": "a.B"}, {"service": "a.C"}, {}]}]}"#)?;
    /// assert_eq!(ServiceConfigLayer::new(&c)?.routes(), 2);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn routes(&self) -> usize {
        self.routes.len()
    }

    /// The channel's `retryThrottling` bucket, shared by every method's stack.
    ///
    /// ```
    /// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
    /// assert!(ServiceConfigLayer::new(&ServiceConfig::default())?.throttle().is_none());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn throttle(&self) -> Option<&Arc<TokenBucket>> {
        self.throttle.as_ref()
    }
}

impl<S: Clone> Layer<S> for ServiceConfigLayer {
    type Service = ServiceConfigClient<S>;

    fn layer(&self, inner: S) -> Self::Service {
        self.routes.layer(inner)
    }
}

/// Builds a [`ServiceConfigLayer`].
///
/// ```
/// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
/// let c = ServiceConfig::from_json(r#"{"methodConfig": [{"name": [{"service": "a.B"}],
///   "retryPolicy": {"maxAttempts": 3, "initialBackoff": "1s", "maxBackoff": "2s",
///   "backoffMultiplier": 0.5, "retryableStatusCodes": ["UNAVAILABLE"]}}]}"#)?;
/// let err = ServiceConfigLayer::new(&c).unwrap_err();
/// assert_eq!(err.path(), "methodConfig[0].retryPolicy.backoffMultiplier");
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct ServiceConfigLayerBuilder<'a> {
    config: &'a ServiceConfig,
    default_timeout: Duration,
    seed: Option<u64>,
}

impl ServiceConfigLayerBuilder<'_> {
    /// The deadline of calls to methods whose entry has no `timeout`, and of methods no entry
    /// names (default [`DEFAULT_TIMEOUT`], 10 s; A6 sets none, steadfast's stacks always
    /// have one).
    ///
    /// ```
    /// use std::time::Duration;
    /// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
    /// let err = ServiceConfigLayer::builder(&ServiceConfig::default())
    ///     .default_timeout(Duration::ZERO)
    ///     .build()
    ///     .unwrap_err();
    /// assert_eq!(err.path(), "default_timeout");
    /// ```
    pub fn default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// Seeds the retry jitter of every method (entry `i` gets `seed + i`), for reproducible
    /// runs (default: from the OS).
    ///
    /// ```
    /// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
    /// assert!(ServiceConfigLayer::builder(&ServiceConfig::default()).seed(1).build().is_ok());
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Validates what steadfast adds to A6's rules and builds every stack.
    ///
    /// ```
    /// use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
    /// assert!(ServiceConfigLayer::builder(&ServiceConfig::default()).build().is_ok());
    /// ```
    pub fn build(self) -> Result<ServiceConfigLayer, ConfigError> {
        if self.default_timeout.is_zero() {
            return Err(ConfigError::zero("default_timeout"));
        }
        let throttle = match self.config.retry_throttling {
            Some(t) => Some(Arc::new(
                TokenBucket::builder()
                    .max_tokens(t.max_tokens)
                    .token_ratio(t.token_ratio)
                    .build()
                    .map_err(|e| rename(e, "retryThrottling"))?,
            )),
            None => None,
        };
        let budget = throttle.clone();
        let mut exact = Vec::new();
        let mut services = Vec::new();
        let mut fallback = None;
        for (i, mc) in self.config.method_config.iter().enumerate() {
            let path = format!("methodConfig[{i}]");
            let seed = self.seed.map(|s| s.wrapping_add(i as u64));
            let layer = self.method_layer(mc, budget.as_ref(), seed, &path)?;
            for (j, name) in mc.name.iter().enumerate() {
                let at = || format!("{path}.name[{j}]");
                match &name.method {
                    _ if name.is_default() => fallback = Some(layer.clone()),
                    Some(m) => exact.push((
                        RouteMatch::grpc(&name.service, Some(m)).map_err(|e| e.at(&at()))?,
                        layer.clone(),
                    )),
                    None => services.push((
                        RouteMatch::grpc(&name.service, None).map_err(|e| e.at(&at()))?,
                        layer.clone(),
                    )),
                }
            }
        }
        let fallback = match fallback {
            Some(f) => f,
            // No entry: one attempt, the default timeout; its successes still return tokens
            // (A6: every RPC of the channel counts).
            None => self.method_layer(
                &MethodConfig::default(),
                budget.as_ref(),
                self.seed,
                "default",
            )?,
        };
        // A6's order: service and method, then service, then the default entry.
        let mut routes = RouteLayer::builder();
        for (m, l) in exact.into_iter().chain(services) {
            routes = routes.route(m, l);
        }
        Ok(ServiceConfigLayer {
            routes: routes.fallback(fallback).build()?,
            throttle,
        })
    }

    fn method_layer(
        &self,
        mc: &MethodConfig,
        budget: Option<&Arc<TokenBucket>>,
        seed: Option<u64>,
        path: &str,
    ) -> Result<MethodLayer, ConfigError> {
        let timeout = match mc.timeout {
            Some(t) if t.is_zero() => return Err(ConfigError::zero(format!("{path}.timeout"))),
            Some(t) => t,
            None => self.default_timeout,
        };
        match &mc.policy {
            Some(MethodPolicy::Hedging(h)) => hedging_layer(h, timeout, budget)
                .map(MethodLayer::Hedging)
                .map_err(|e| rename(e, &format!("{path}.hedgingPolicy"))),
            Some(MethodPolicy::Retry(r)) => retrying_layer(Some(r), timeout, budget, seed, path)
                .map(|l| MethodLayer::Retrying(Box::new(l))),
            None => retrying_layer(None, timeout, budget, seed, path)
                .map(|l| MethodLayer::Retrying(Box::new(l))),
        }
    }
}

/// A6's classifier for a list of codes: exactly these are retryable (non-fatal), every other
/// non-`OK` code is a fatal failure (no retry, no token taken). A transport error (the
/// connection broke) is what a gRPC client reports as `UNAVAILABLE`: retryable only when
/// `UNAVAILABLE` is listed. (A request that never left is resent once either way: A6's
/// transparent retry.)
fn a6_classifier(retryable: &[GrpcCode]) -> Result<GrpcClassifier, ConfigError> {
    a6_classifier_builder(retryable).build()
}

fn a6_classifier_builder(retryable: &[GrpcCode]) -> GrpcClassifierBuilder {
    let mut b = GrpcClassifier::builder()
        .no_retry_on(GrpcCode::Unavailable)
        .no_retry_on(GrpcCode::ResourceExhausted)
        .retry_errors(retryable.contains(&GrpcCode::Unavailable));
    for n in 1..=16 {
        b = b.failure_on(GrpcCode::from_u32(n));
    }
    for &code in retryable {
        b = b.retry_on(code);
    }
    b
}

fn retrying_layer(
    policy: Option<&RetryPolicy>,
    timeout: Duration,
    budget: Option<&Arc<TokenBucket>>,
    seed: Option<u64>,
    path: &str,
) -> Result<StandardClientLayer<GrpcClassifier, Identity, Tonic>, ConfigError> {
    let rpath = |f: &str| format!("{path}.retryPolicy.{f}");
    let (attempts, backoff, codes) = match policy {
        Some(r) => {
            if !(1.0..=100.0).contains(&r.backoff_multiplier) {
                return Err(ConfigError::new(
                    rpath("backoffMultiplier"),
                    crate::error::Problem::OutOfRange {
                        value: r.backoff_multiplier.to_string(),
                        accepted: "[1, 100] (steadfast's backoff grows by a factor in [1, 100])",
                    },
                ));
            }
            if r.max_backoff > MAX_BACKOFF {
                return Err(ConfigError::out_of_range(
                    rpath("maxBackoff"),
                    r.max_backoff,
                    "(0, 24 h] (steadfast's longest backoff)",
                ));
            }
            // min(initial * m^(n-1), max) == min(min(initial, max) * m^(n-1), max) for m >= 1.
            let base = r.initial_backoff.min(r.max_backoff);
            let backoff = Backoff::exponential(base, r.max_backoff)
                .multiplier(r.backoff_multiplier)
                .jitter(Jitter::Full);
            (r.max_attempts, backoff, r.retryable_status_codes.as_slice())
        }
        None => (1, Backoff::default(), &[][..]),
    };
    let classifier = a6_classifier(codes).map_err(|e| e.at(path))?;
    let budget = budget.cloned();
    StandardClientLayer::builder()
        .tonic()
        .classifier(classifier)
        .timeout(timeout)
        .no_attempt_timeout()
        .retry(move |r| {
            let r = r.max_attempts(attempts).backoff(backoff);
            let r = match seed {
                Some(s) => r.seed(s),
                None => r,
            };
            match budget {
                Some(b) => r.budget(b),
                None => r.no_budget(),
            }
        })
        .build()
        .map_err(|e| e.at(path))
}

fn hedging_layer(
    policy: &HedgingPolicy,
    timeout: Duration,
    budget: Option<&Arc<TokenBucket>>,
) -> Result<HedgingStackLayer, ConfigError> {
    let codes = &policy.non_fatal_status_codes;
    // The throttling bucket counts every pushback, as A6 does; the hedge judges by A6's hedging
    // rules: a fatal status ends the call whatever pushback comes with it, and any pushback
    // the deadline may hold delays the next hedge (24 h, the longest server delay, rather than
    // the retry layer's 30 s).
    let classifier = a6_classifier(codes)?;
    let judge = a6_classifier_builder(codes)
        .max_server_delay(MAX_BACKOFF)
        .build()?
        .fatal_over_pushback();
    let delay = if policy.hedging_delay.is_zero() {
        ZERO_HEDGING_DELAY
    } else {
        policy.hedging_delay
    };
    let mut hedge = HedgeLayer::builder()
        .delay(HedgeDelay::fixed(delay))
        .max_hedges(policy.max_attempts - 1)
        .no_budget();
    if let Some(b) = budget {
        hedge = hedge.budget(Arc::clone(b));
    }
    let hedge = hedge
        .policy(ByOutcome(HedgeAny))
        .classifier(judge)
        .replay(HttpReplay::new())
        .build()?;
    Ok(HedgingStackLayer {
        replay_body: ReplayBodyLayer::with_limit(DEFAULT_REPLAY_LIMIT)?,
        deadline: DeadlineLayer::builder()
            .timeout(timeout)
            .carrier(HttpExtensions)
            .build()?,
        hedge,
        record: ThrottleRecordLayer::new(
            classifier,
            budget.map(|b| Arc::clone(b) as Arc<dyn RetryBudget>),
        ),
        propagation: DeadlinePropagationLayer::builder().build()?,
    })
}

/// The same error under `parent`, the builder's field named as the service config names it.
fn rename(e: ConfigError, parent: &str) -> ConfigError {
    let field = match e.path() {
        "max_tokens" => "maxTokens",
        "token_ratio" => "tokenRatio",
        "delay" => "hedgingDelay",
        "max_hedges" => "maxAttempts",
        other => other,
    };
    ConfigError::new(format!("{parent}.{field}"), e.problem().clone())
}

/// One `methodConfig` entry's layer: the retrying or the hedging stack.
#[derive(Clone, Debug)]
pub enum MethodLayer {
    /// The standard tonic preset (a `retryPolicy`, or none).
    Retrying(Box<StandardClientLayer<GrpcClassifier, Identity, Tonic>>),
    /// The hedging stack (a `hedgingPolicy`).
    Hedging(HedgingStackLayer),
}

impl<S> Layer<S> for MethodLayer {
    type Service = MethodService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        match self {
            MethodLayer::Retrying(l) => MethodStack::Retrying(l.layer(inner)),
            MethodLayer::Hedging(l) => MethodStack::Hedging(l.layer(inner)),
        }
    }
}

/// The hedging stack of a method with a `hedgingPolicy` (see [`HedgingService`]).
#[derive(Clone, Debug)]
pub struct HedgingStackLayer {
    replay_body: ReplayBodyLayer,
    deadline: DeadlineLayer<HttpExtensions>,
    hedge: HedgeLayer<ByOutcome<HedgeAny>, GrpcClassifier, HttpReplay>,
    record: ThrottleRecordLayer,
    propagation: DeadlinePropagationLayer,
}

impl<S> Layer<S> for HedgingStackLayer {
    type Service = HedgingService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let svc = Tonic.inner(inner);
        let svc = self.propagation.layer(svc);
        let svc = self.record.layer(svc);
        let svc = self.hedge.layer(svc);
        let svc = self.deadline.layer(svc);
        let svc = self.replay_body.layer(svc);
        Tonic.outer(svc)
    }
}
