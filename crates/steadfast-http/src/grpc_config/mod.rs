//! gRPC service config (gRFC A6): the standard JSON that grpc-go and grpc-java read for
//! per-method timeouts, retries, hedging and retry throttling, parsed with A6's validation
//! rules ([`ServiceConfig`]) and built into steadfast stacks over a tonic `Channel`
//! ([`ServiceConfigLayer`]), one per `methodConfig` entry, chosen per call by service and
//! method through a [`Router`](crate::route::Router). Feature `tonic`.
//!
//! | service config | default (anchor) | steadfast |
//! |---|---|---|
//! | `methodConfig[].name[]` `{service, method}` | required, at least one (service_config.md) | a [`RouteMatch::grpc`](crate::route::RouteMatch::grpc) per name: service and method first, then service, then the default entry `{}` as the fallback |
//! | `timeout` | none (A6); here [`DEFAULT_TIMEOUT`](crate::preset::DEFAULT_TIMEOUT), 10 s, the preset's, set with [`default_timeout`](ServiceConfigLayerBuilder::default_timeout) | the call's [deadline](steadfast_layers::deadline), retries and hedges included |
//! | `retryPolicy.maxAttempts` | required, 2 or more; more than 5 is 5 (A6, "Limits on Retries and Hedges") | the retry layer's `max_attempts` |
//! | `initialBackoff`, `maxBackoff`, `backoffMultiplier` | required, greater than zero (A6) | [`Backoff::exponential`](steadfast_layers::retry::Backoff::exponential) with that multiplier and full jitter (A6's formula); a multiplier outside `[1, 100]` or a `maxBackoff` over a day is refused when the stacks are built |
//! | `retryableStatusCodes` | required, not empty (A6) | a [`GrpcClassifier`](crate::classify::GrpcClassifier) retrying exactly these |
//! | `hedgingPolicy.maxAttempts` | required, 2 or more; more than 5 is 5 (A6) | `maxAttempts - 1` hedges |
//! | `hedgingDelay` | `0s`: all at once (A6) | a [fixed hedge delay](steadfast_layers::hedge::HedgeDelay::fixed) (`0s`: [`ZERO_HEDGING_DELAY`], 1 ms) |
//! | `nonFatalStatusCodes` | none (service_config.proto) | the failures that leave the call to the other attempts and send the next hedge at once (A6; any other status ends the call and cancels the others, [`ByOutcome`](steadfast_layers::hedge::ByOutcome)), and take a throttling token |
//! | `retryThrottling.maxTokens` | required, in `(0, 1000]` (service_config.proto) | one [`TokenBucket`](steadfast_layers::retry::TokenBucket), full at the start, shared by every method's retries and hedges |
//! | `retryThrottling.tokenRatio` | required, greater than zero, 3 decimal places kept (A6) | tokens returned per success |
//! | anything else (`loadBalancingConfig`, `waitForReady`, ...) | | ignored |
//!
//! See [`ServiceConfigLayer`] for the stacks and where they depart from A6.
//!
//! # Example
//!
//! ```no_run
//! use steadfast_http::grpc_config::{ServiceConfig, ServiceConfigLayer};
//! use tower::Layer;
//!
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let config = ServiceConfig::from_json(r#"{
//!   "methodConfig": [{
//!     "name": [{ "service": "helloworld.Greeter" }],
//!     "timeout": "2s",
//!     "retryPolicy": {
//!       "maxAttempts": 3, "initialBackoff": "0.1s", "maxBackoff": "1s",
//!       "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]
//!     }
//!   }],
//!   "retryThrottling": { "maxTokens": 10, "tokenRatio": 0.1 }
//! }"#)?;
//! let channel = tonic::transport::Channel::from_static("http://127.0.0.1:50051").connect().await?;
//! let channel = ServiceConfigLayer::new(&config)?.layer(channel);
//! // Hand it to generated code: `GreeterClient::new(channel)`.
//! # let _ = channel; Ok(()) }
//! ```

mod config;
mod future;
mod layer;
mod service;

pub use config::{
    HedgingPolicy, MethodConfig, MethodName, MethodPolicy, RetryPolicy, RetryThrottling,
    ServiceConfig, MAX_ATTEMPTS_CAP,
};
pub use future::{MethodFuture, RecordFuture};
pub use layer::{
    HedgingService, HedgingStackLayer, MethodLayer, MethodService, RetryingService,
    ServiceConfigClient, ServiceConfigLayer, ServiceConfigLayerBuilder, ZERO_HEDGING_DELAY,
};
pub use service::{MethodStack, ThrottleRecord};
