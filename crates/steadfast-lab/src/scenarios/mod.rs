//! The scenarios, one file each.
//!
//! A scenario module provides
//!
//! ```text
//! pub(crate) const SUMMARY: &str = "one line: what it shows";
//! pub(crate) async fn run(opts: Options) -> Result<Findings, BoxError>;
//! ```
//!
//! and is registered by adding its module name to the `scenarios!` list below: that one line
//! declares the module, names the scenario after it, and adds it to [`ALL`] (and so to
//! `--scenario`, the default run, `--list` and the tests). A scenario starts its own servers,
//! runs a bounded amount of load (a request count or a fixed time), drains the servers, and
//! finds its configuration lines, one [`VariantReport`](crate::report::VariantReport) per client
//! configuration and its [`Target`](crate::report::Target)s; [`Scenario::run`] makes them a
//! [`ScenarioReport`] with the header every report shares.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;

use crate::report::{Findings, ScenarioReport};
use crate::{BoxError, Options};

type RunFn = fn(Options) -> Pin<Box<dyn Future<Output = Result<Findings, BoxError>>>>;

/// A registered scenario.
#[derive(Clone, Copy)]
pub struct Scenario {
    name: &'static str,
    summary: &'static str,
    run: RunFn,
}

impl Scenario {
    /// Its name, as given to `--scenario`.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// One line: what it shows.
    pub fn summary(&self) -> &'static str {
        self.summary
    }

    /// Runs it and reports under its name and summary, with `opts`' mode and seed and the time
    /// the run took. With `opts.chaos`, the report's configuration says which faults were added.
    pub async fn run(&self, opts: Options) -> Result<ScenarioReport, BoxError> {
        let started = Instant::now();
        let Findings {
            mut config,
            variants,
            targets,
        } = (self.run)(opts).await?;
        if let Some(chaos) = &opts.chaos {
            config.push(("chaos", chaos.to_string()));
        }
        Ok(ScenarioReport {
            scenario: self.name,
            description: self.summary.to_owned(),
            quick: opts.quick,
            seed: opts.seed,
            config,
            variants,
            targets,
            elapsed: started.elapsed(),
        })
    }
}

impl fmt::Debug for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scenario")
            .field("name", &self.name)
            .finish()
    }
}

macro_rules! scenarios {
    ($($name:ident),* $(,)?) => {
        $(mod $name;)*

        /// Every scenario, in the order a full run runs them.
        pub const ALL: &[Scenario] = &[$(
            Scenario {
                name: stringify!($name),
                summary: $name::SUMMARY,
                run: |opts| Box::pin($name::run(opts)),
            },
        )*];
    };
}

// Register a scenario here (its module name is its name).
scenarios![
    flaky,
    overload,
    deadline,
    saga,
    idempotency,
    outage,
    tail,
    tail_shift,
    tail_frontier,
    overload_adaptive
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    ALL.iter().find(|s| s.name == name)
}

/// `d` for configuration lines: `250 ms`, `2 s`, `1.5 s`.
pub(crate) fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 1000.0 {
        let s = ms / 1000.0;
        if s.fract() == 0.0 {
            format!("{s:.0} s")
        } else {
            format!("{s:.1} s")
        }
    } else if ms.fract() == 0.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(ms(Duration::from_millis(250)), "250 ms");
        assert_eq!(ms(Duration::from_secs(2)), "2 s");
        assert_eq!(ms(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(ms(Duration::from_micros(2500)), "2.5 ms");
    }

    #[test]
    fn names_are_unique() {
        for (i, s) in ALL.iter().enumerate() {
            assert!(ALL[i + 1..].iter().all(|t| t.name() != s.name()));
            assert!(find(s.name()).is_some());
        }
    }
}
