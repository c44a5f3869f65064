//! The steadfast lab: fault scenarios run against real HTTP servers on loopback.
//!
//! `cargo run --release -p steadfast-lab` starts hyper servers on `127.0.0.1` (OS-assigned
//! ports) whose faults are configurable ([`server`]: injected 503s, latency distributions,
//! hard outage windows (connections closed, or 503s at once), a capacity limit that queues or
//! rejects), drives load at them through a hyper-util client wrapped in the steadfast layers
//! ([`client`], [`load`]), and prints one table per scenario ([`report`]) saying what each client
//! configuration achieved and whether the scenario's targets were met.
//!
//! Scenarios live in [`scenarios`], one file each; adding one is a new file there plus one name in
//! the registration list of `scenarios/mod.rs`.
//!
//! Determinism: every injected fault is drawn from a [`SeededRng`](steadfast_layers::rng::SeededRng)
//! keyed by the run's seed, the logical request's id and the attempt's number, so the same
//! requests meet the same faults in every variant and every run with the same seed. Timing on a
//! real network stack (even loopback) still varies, so latency figures move a little between
//! runs; counts that depend only on faults do not.
//!
//! `--chaos` ([`chaos`]) adds client-side faults from steadfast's own `ChaosLayer` to every
//! scenario but `saga`, on top of the server's: off unless given, seeded by the run's seed.
//!
//! `--metrics-addr HOST:PORT` ([`metrics`]) serves the layers' OpenTelemetry metrics as
//! Prometheus text on `/metrics` while the scenarios run; `scripts/check-dashboard.sh` points a
//! real Prometheus at it and runs every query of `docs/dashboards/steadfast.json`.
//!
//! The binary's flags are described by `steadfast-lab --help`; this library is what it and the
//! tests call:
//!
//! ```no_run
//! # async fn demo() -> Result<(), steadfast_layers::BoxError> {
//! let opts = steadfast_lab::Options { quick: true, seed: 1, progress: false, chaos: None };
//! let scenario = steadfast_lab::scenarios::find("flaky").ok_or("no such scenario")?;
//! let report = scenario.run(opts).await?;
//! println!("{}", report.to_json_line()?);
//! assert!(report.targets_met());
//! # Ok(()) }
//! ```

pub mod chaos;
pub mod client;
pub mod html;
pub mod ledger;
pub mod load;
pub mod metrics;
pub mod progress;
pub mod report;
pub mod scenarios;
pub mod server;
pub mod timeline;

use steadfast_layers::chaos::ChaosLayer;
pub use steadfast_layers::BoxError;
use steadfast_layers::ConfigError;

/// How to run a scenario.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Options {
    /// Small runs, for CI: every scenario together finishes in about 45 s.
    pub quick: bool,
    /// Seed of every injected fault, jittered backoff and arrival process.
    pub seed: u64,
    /// Show progress on stderr.
    pub progress: bool,
    /// Client-side faults added to every scenario's transport (`--chaos`; off when `None`).
    pub chaos: Option<chaos::ChaosSpec>,
}

impl Options {
    /// The lab's HTTP client for this run: with the `--chaos` faults when given, drawn from a
    /// stream seeded by the run's seed.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_layers::BoxError> {
    /// let opts = steadfast_lab::Options { chaos: Some("error=1".parse()?), ..Default::default() };
    /// let client = opts.http_client()?;
    /// let req: steadfast_lab::client::LabRequest =
    ///     http::Request::get("http://127.0.0.1:9/").body(Default::default())?;
    /// let err = tower::ServiceExt::oneshot(client, req).await.unwrap_err();
    /// assert!(err.is::<steadfast_layers::chaos::InjectedFault>());
    /// # Ok(()) }
    /// ```
    pub fn http_client(&self) -> Result<client::HttpClient, ConfigError> {
        let http = client::HttpClient::new();
        Ok(match self.chaos_layer()? {
            Some(layer) => http.chaos(layer),
            None => http,
        })
    }

    /// The `--chaos` layer a fresh [`http_client`](Self::http_client) of this run uses (`None`
    /// without `--chaos`). Its random stream starts where every fresh client's does, and the
    /// layer draws a fixed number of times per call, so the faults of the first `n` calls
    /// through it are those of the first `n` attempts of any client of the run, in whatever
    /// order those are made: tests count them without a server.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_layers::BoxError> {
    /// use tower::{Layer, ServiceExt};
    /// let opts = steadfast_lab::Options { chaos: Some("error=0.5".parse()?), ..Default::default() };
    /// let layer = opts.chaos_layer()?.ok_or("chaos is on")?;
    /// let svc = layer.layer(tower::service_fn(|()| async { Ok::<_, steadfast_layers::BoxError>(()) }));
    /// let mut failed = 0;
    /// for _ in 0..100 {
    ///     failed += usize::from(svc.clone().oneshot(()).await.is_err());
    /// }
    /// assert!((20..=80).contains(&failed));
    /// assert!(steadfast_lab::Options::default().chaos_layer()?.is_none());
    /// # Ok(()) }
    /// ```
    pub fn chaos_layer(&self) -> Result<Option<ChaosLayer>, ConfigError> {
        self.chaos
            .as_ref()
            .map(|spec| spec.layer(self.seed ^ CHAOS_SEED))
            .transpose()
    }
}

/// Mixed into the run's seed for the `--chaos` streams, so that they do not replay the server's
/// own fault draws.
const CHAOS_SEED: u64 = 0x6368_616f_7321;

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            seed: DEFAULT_SEED,
            progress: false,
            chaos: None,
        }
    }
}

/// The seed used when `--seed` is not given.
pub const DEFAULT_SEED: u64 = 1;
