//! The lab's HTTP client: a hyper-util client as a tower service, and the steadfast stack around
//! it.
//!
//! [`HttpClient`] sends `http::Request<Full<Bytes>>`, collects the response body, stamps every
//! attempt with a unique `x-lab-attempt-id`, notes in the [`Ledger`] when an attempt is abandoned
//! (its future dropped, e.g. by an attempt timeout), and can write the remaining deadline into
//! the `x-request-timeout-ms` header (steadfast-http's codec). With [`HttpClient::chaos`]
//! (the lab's `--chaos`), every attempt first goes through steadfast's
//! [`ChaosLayer`]: injected latency, errors before sending, or responses lost after the server
//! served them. [`lab_client`] wraps it in steadfast's standard client preset, exactly as a
//! user would ([`StandardClientLayer`]: total deadline, retries with the HTTP classifier and
//! body replay, an optional breaker in its slot, per-attempt timeout, deadline propagation).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use steadfast_http::body::ReplayBody;
use steadfast_http::preset::{StandardClient, StandardClientBuilder, StandardClientLayer};
use steadfast_http::ConfigError;
use steadfast_layers::chaos::ChaosLayer;
use steadfast_layers::deadline::Deadline;
use steadfast_layers::retry::{Backoff, Jitter, RatioBudget};
use steadfast_layers::BoxError;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

use crate::ledger::Ledger;

/// Header carrying the lab's logical request id (the same on every attempt and every hop).
pub const REQUEST_ID: &str = "x-lab-request-id";
/// Header carrying the id of one attempt (unique per [`HttpClient`] call).
pub const ATTEMPT_ID: &str = "x-lab-attempt-id";

/// The request type every lab client sends.
pub type LabRequest = Request<Full<Bytes>>;
/// The response type every lab client returns: the body collected.
pub type LabResponse = Response<Bytes>;

/// A hyper-util client as a `tower::Service`, instrumented for the lab. It takes the presets'
/// replayable bodies (`Request<ReplayBody<Full<Bytes>>>`, as a client from
/// `steadfast_http::preset::hyper_client` does) and plain [`LabRequest`]s (wrapped once).
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, ReplayBody<Full<Bytes>>>,
    propagate: Option<Duration>,
    strip_deadline: bool,
    ledger: Option<Arc<Ledger>>,
    attempt_ids: Arc<AtomicU64>,
    chaos: Option<ChaosLayer>,
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("propagate", &self.propagate)
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client with its own connection pool (keep-alive, `TCP_NODELAY`).
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        HttpClient {
            client,
            propagate: None,
            strip_deadline: false,
            ledger: None,
            attempt_ids: Arc::new(AtomicU64::new(0)),
            chaos: None,
        }
    }

    /// Sends every attempt through `chaos` first (all clones share its switch and its random
    /// stream). An injected error fails the attempt before it is sent; an abort drops the
    /// response after the server served it; latency delays the send. See
    /// [`ChaosSpec`](crate::chaos::ChaosSpec) for the lab's `--chaos`.
    pub fn chaos(mut self, chaos: ChaosLayer) -> Self {
        self.chaos = Some(chaos);
        self
    }

    /// Writes the remaining time of the deadline in scope ([`Deadline::current`]) into
    /// steadfast-http's [`REQUEST_TIMEOUT_MS`](steadfast_http::codec::REQUEST_TIMEOUT_MS) header, less `margin` (the time the hop itself may take, shaved as gRPC and
    /// Google SRE advise so that the next hop gives up no later than its caller).
    pub fn propagate_deadline(mut self, margin: Duration) -> Self {
        self.propagate = Some(margin);
        self
    }

    /// Removes the deadline header a stack above wrote (the preset always propagates): the lab's
    /// stand-in for a caller whose deadline does not cross the wire.
    pub fn without_deadline_header(mut self) -> Self {
        self.strip_deadline = true;
        self
    }

    /// Notes abandoned attempts in `ledger`.
    pub fn ledger(mut self, ledger: Arc<Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// How many attempts this client (and its clones) has sent.
    pub fn attempts_sent(&self) -> u64 {
        self.attempt_ids.load(Ordering::Relaxed)
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

/// Notes the attempt as abandoned if its future is dropped before it finished.
struct AbandonGuard {
    ledger: Option<Arc<Ledger>>,
    attempt: u64,
    finished: bool,
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if !self.finished {
            if let Some(ledger) = &self.ledger {
                ledger.attempt_abandoned(self.attempt, Instant::now());
            }
        }
    }
}

/// What the lab's HTTP client sends: the presets' replayable body.
pub type WireRequest = Request<ReplayBody<Full<Bytes>>>;

impl tower::Service<LabRequest> for HttpClient {
    type Response = LabResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<LabResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: LabRequest) -> Self::Future {
        tower::Service::<WireRequest>::call(self, req.map(ReplayBody::new))
    }
}

impl tower::Service<WireRequest> for HttpClient {
    type Response = LabResponse;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<LabResponse, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // The pool opens connections on demand; hyper-util's client is always ready.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: WireRequest) -> Self::Future {
        if let Some(chaos) = &self.chaos {
            let wire = HttpClient {
                chaos: None,
                ..self.clone()
            };
            return Box::pin(chaos.layer(wire).oneshot(req));
        }
        let attempt = self.attempt_ids.fetch_add(1, Ordering::Relaxed);
        let headers = req.headers_mut();
        headers.insert(ATTEMPT_ID, HeaderValue::from(attempt));
        if self.strip_deadline {
            headers.remove(steadfast_http::codec::REQUEST_TIMEOUT_MS);
        }
        if let Some(margin) = self.propagate {
            // Called inside the deadline layer's scope: the deadline in scope is the caller's.
            if let Some(deadline) = Deadline::current() {
                let left = deadline.remaining().saturating_sub(margin);
                headers.insert(
                    steadfast_http::codec::REQUEST_TIMEOUT_MS,
                    steadfast_http::codec::encode_timeout_ms(left),
                );
            }
        }
        let guard = AbandonGuard {
            ledger: self.ledger.clone(),
            attempt,
            finished: false,
        };
        let sent = self.client.request(req);
        Box::pin(async move {
            // Move the whole guard in (a closure would capture only the field it touches).
            let mut guard = guard;
            let result = async {
                let (parts, body) = sent.await?.into_parts();
                let body = body.collect().await?.to_bytes();
                Ok::<_, BoxError>(Response::from_parts(parts, body))
            }
            .await;
            guard.finished = true;
            result
        })
    }
}

/// A copy of `req` (without its extensions).
pub fn clone_request(req: &LabRequest) -> LabRequest {
    let mut copy = Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// How a lab caller retries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Retries {
    /// One attempt only.
    None,
    /// Up to `max_attempts`, no budget.
    Naive {
        /// Attempts, first included.
        max_attempts: u32,
    },
    /// Up to `max_attempts`, within a fresh [`RatioBudget`] shared by all of this client's calls.
    Budgeted {
        /// Attempts, first included.
        max_attempts: u32,
        /// Share of requests that may be retried (`0.1` = 10 %).
        ratio: f64,
        /// Retries allowed per second regardless of the ratio.
        min_retries_per_sec: u32,
    },
}

impl Retries {
    /// A one-line description, for reports.
    pub fn describe(&self) -> String {
        match *self {
            Retries::None => "1 attempt, no retries".to_owned(),
            Retries::Naive { max_attempts } => format!("{max_attempts} attempts, no budget"),
            Retries::Budgeted {
                max_attempts,
                ratio,
                min_retries_per_sec,
            } => format!(
                "{max_attempts} attempts, RatioBudget {}% of requests + {min_retries_per_sec} retries/s over 10 s",
                ratio * 100.0
            ),
        }
    }
}

/// How a lab caller is configured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CallerConfig {
    /// The caller's end-to-end deadline per logical request (retries included).
    pub deadline: Duration,
    /// Each attempt's timeout (`None`: attempts are bounded by the deadline only).
    pub attempt_timeout: Option<Duration>,
    /// Retry policy.
    pub retries: Retries,
    /// Exponential backoff base and cap (full jitter).
    pub backoff: (Duration, Duration),
    /// Seed of the backoff jitter.
    pub seed: u64,
    /// The deadline crosses the wire (`x-request-timeout-ms`) less this margin; `None`: it does
    /// not (the lab removes the header the preset wrote).
    pub propagate: Option<Duration>,
}

/// The service a lab caller uses: steadfast's standard client preset around the HTTP client.
pub type LabService = StandardClient<HttpClient>;

/// Builds a caller's stack around `http`: [`StandardClientLayer`] with the caller's deadline,
/// attempt timeout, retries, backoff and seed, and everything else as a user gets it (the
/// [`HttpClassifier`](steadfast_http::classify::HttpClassifier), body replay, the one
/// eligibility rule, deadline propagation).
pub fn lab_client(cfg: &CallerConfig, http: HttpClient) -> Result<LabService, ConfigError> {
    Ok(caller_layer(cfg)?.build()?.layer(match cfg.propagate {
        Some(_) => http,
        None => http.without_deadline_header(),
    }))
}

/// The preset builder for a caller, so that a scenario can put a breaker in its slot.
pub fn caller_layer(cfg: &CallerConfig) -> Result<StandardClientBuilder, ConfigError> {
    let (base, cap) = cfg.backoff;
    let budget = match cfg.retries {
        Retries::Budgeted {
            ratio,
            min_retries_per_sec,
            ..
        } => Some(Arc::new(
            RatioBudget::builder()
                .ratio(ratio)
                .min_retries_per_sec(min_retries_per_sec)
                .ttl(Duration::from_secs(10))
                .build()?,
        )),
        _ => None,
    };
    let max_attempts = match cfg.retries {
        Retries::None => 1,
        Retries::Naive { max_attempts } | Retries::Budgeted { max_attempts, .. } => max_attempts,
    };
    let builder = StandardClientLayer::builder()
        .timeout(cfg.deadline)
        .margin(cfg.propagate.unwrap_or(Duration::ZERO))
        .retry(|r| {
            let r = r
                .max_attempts(max_attempts)
                .backoff(Backoff::exponential(base, cap).jitter(Jitter::Full))
                .seed(cfg.seed);
            match budget {
                Some(b) => r.budget(b),
                None => r.no_budget(),
            }
        });
    Ok(match cfg.attempt_timeout {
        Some(t) => builder.attempt_timeout(t),
        None => builder.no_attempt_timeout(),
    })
}

/// A GET request for logical request `id` to `uri`.
pub fn get(uri: &http::Uri, id: u64) -> Result<LabRequest, http::Error> {
    Request::get(uri.clone())
        .header(REQUEST_ID, id)
        .body(Full::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_request_keeps_everything_but_extensions() {
        let mut req = get(&http::Uri::from_static("http://127.0.0.1:1/x"), 7).expect("request");
        req.extensions_mut().insert(5_u8);
        let copy = clone_request(&req);
        assert_eq!(copy.uri(), req.uri());
        assert_eq!(copy.headers().get(REQUEST_ID), Some(&HeaderValue::from(7)));
        assert!(copy.extensions().get::<u8>().is_none());
    }
}
