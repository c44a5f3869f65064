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
//! The binary's flags are described by `steadfast-lab --help`; this library is what it and the
//! tests call:
//!
//! ```no_run
//! # async fn demo() -> Result<(), steadfast_layers::BoxError> {
//! let opts = steadfast_lab::Options { quick: true, seed: 1, progress: false };
//! let scenario = steadfast_lab::scenarios::find("flaky").ok_or("no such scenario")?;
//! let report = scenario.run(opts).await?;
//! println!("{}", report.to_json_line()?);
//! assert!(report.targets_met());
//! # Ok(()) }
//! ```

pub mod client;
pub mod ledger;
pub mod load;
pub mod progress;
pub mod report;
pub mod scenarios;
pub mod server;

pub use steadfast_layers::BoxError;

/// How to run a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Small runs, for CI: every scenario together finishes in about 30 s.
    pub quick: bool,
    /// Seed of every injected fault, jittered backoff and arrival process.
    pub seed: u64,
    /// Show progress on stderr.
    pub progress: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quick: false,
            seed: DEFAULT_SEED,
            progress: false,
        }
    }
}

/// The seed used when `--seed` is not given.
pub const DEFAULT_SEED: u64 = 1;
