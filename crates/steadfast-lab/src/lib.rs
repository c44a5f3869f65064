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
pub mod ledger;
pub mod load;
pub mod progress;
pub mod report;
pub mod scenarios;
pub mod server;

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
    /// let req = http::Request::get("http://127.0.0.1:9/").body(Default::default())?;
    /// let err = tower::ServiceExt::oneshot(client, req).await.unwrap_err();
    /// assert!(err.is::<steadfast_layers::chaos::InjectedFault>());
    /// # Ok(()) }
    /// ```
    pub fn http_client(&self) -> Result<client::HttpClient, ConfigError> {
        let http = client::HttpClient::new();
        Ok(match &self.chaos {
            Some(spec) => http.chaos(spec.layer(self.seed ^ CHAOS_SEED)?),
            None => http,
        })
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
