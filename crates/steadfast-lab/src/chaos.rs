//! `--chaos`: client-side faults from steadfast's [`ChaosLayer`], on top of a scenario's own.
//!
//! Each scenario injects the faults it is about on its server ([`server`](crate::server)): 503s,
//! outages, slow tails, lost replies. `--chaos` adds faults on the client side of every
//! scenario's transport (all but `saga`'s, whose orchestrator may run in a child process and
//! whose participants inject their own lost replies), with steadfast's own fault-injection
//! layer, to see how a scenario's layers cope with more than it was calibrated for:
//!
//! - `error=P`: with probability `P` an attempt fails before it is sent (the server never sees
//!   it; a retry layer may resend it);
//! - `abort=P`: with probability `P` the attempt is sent and served, and its response is lost
//!   (the caller cannot know whether it took effect);
//! - `latency=P:D`: with probability `P` the attempt is sent `D` late (`D` as `250ms` or `2s`).
//!
//! Off unless given. The faults are drawn in call order from a stream seeded by `--seed`, one
//! stream per client, so a run replays exactly where its calls are made in the same order. The
//! scenarios' targets are calibrated without chaos: with it, a missed target is a finding, not a
//! bug in the lab.
//!
//! ```
//! use std::time::Duration;
//! use steadfast_lab::chaos::ChaosSpec;
//! let spec: ChaosSpec = "error=0.05,latency=0.1:250ms".parse()?;
//! assert_eq!(spec.error, 0.05);
//! assert_eq!(spec.latency, Some((0.1, Duration::from_millis(250))));
//! assert!(spec.layer(1).is_ok());
//! assert!("error=1.5".parse::<ChaosSpec>().is_err());
//! # Ok::<(), String>(())
//! ```

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use steadfast_layers::chaos::ChaosLayer;
use steadfast_layers::ConfigError;

/// The client-side faults of `--chaos` (see the [module docs](self)).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ChaosSpec {
    /// Probability that an attempt fails before it is sent.
    pub error: f64,
    /// Probability that an attempt's response is lost after the server served it.
    pub abort: f64,
    /// Probability and length of an added delay before an attempt is sent.
    pub latency: Option<(f64, Duration)>,
}

impl ChaosSpec {
    /// The layer for one client, its random stream seeded by `seed`.
    ///
    /// ```
    /// use steadfast_lab::chaos::ChaosSpec;
    /// let spec = ChaosSpec { abort: 0.02, ..ChaosSpec::default() };
    /// assert!(spec.layer(7)?.handle().is_enabled());
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn layer(&self, seed: u64) -> Result<ChaosLayer, ConfigError> {
        let mut builder = ChaosLayer::builder()
            .error(self.error)
            .abort(self.abort)
            .seed(seed);
        if let Some((p, delay)) = self.latency {
            builder = builder.latency(p, delay);
        }
        builder.build()
    }
}

impl FromStr for ChaosSpec {
    type Err = String;

    /// Parses `error=P,abort=P,latency=P:D`, in any order, each at most once, at least one.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut spec = ChaosSpec::default();
        let mut seen: Vec<&str> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("--chaos: expected KEY=VALUE, got {part:?}"))?;
            let key = key.trim();
            if seen.contains(&key) {
                return Err(format!("--chaos: {key} given twice"));
            }
            match key {
                "error" => spec.error = probability(key, value)?,
                "abort" => spec.abort = probability(key, value)?,
                "latency" => {
                    let (p, d) = value.split_once(':').ok_or_else(|| {
                        format!("--chaos: latency takes P:DURATION (e.g. 0.1:250ms), got {value:?}")
                    })?;
                    spec.latency = Some((probability(key, p)?, duration(d)?));
                }
                _ => {
                    return Err(format!(
                        "--chaos: unknown fault {key:?} (known: error, abort, latency)"
                    ))
                }
            }
            seen.push(key);
        }
        if seen.is_empty() {
            return Err("--chaos needs at least one of error=P, abort=P, latency=P:D".to_owned());
        }
        // The layer's own validation (probabilities in [0, 1], error + abort at most 1, ...).
        spec.layer(0).map_err(|e| format!("--chaos: {e}"))?;
        Ok(spec)
    }
}

impl fmt::Display for ChaosSpec {
    /// The report's description of the faults.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = |p: f64| format!("{}%", p * 100.0);
        let mut parts = Vec::new();
        if self.error > 0.0 {
            parts.push(format!(
                "{} of attempts fail before sending",
                pct(self.error)
            ));
        }
        if self.abort > 0.0 {
            parts.push(format!(
                "{} lose their response after being served",
                pct(self.abort)
            ));
        }
        if let Some((p, d)) = self.latency {
            parts.push(format!("{} are sent {} ms late", pct(p), d.as_millis()));
        }
        if parts.is_empty() {
            parts.push("no faults".to_owned());
        }
        write!(
            f,
            "client-side ChaosLayer (--chaos): {}; targets are calibrated without it",
            parts.join(", ")
        )
    }
}

fn probability(key: &str, value: &str) -> Result<f64, String> {
    let p: f64 = value
        .trim()
        .parse()
        .map_err(|_| format!("--chaos: {key} needs a probability in [0, 1], got {value:?}"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!(
            "--chaos: {key} needs a probability in [0, 1], got {value:?}"
        ));
    }
    Ok(p)
}

fn duration(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let bad = || format!("--chaos: latency needs a duration such as 250ms or 2s, got {value:?}");
    let (number, unit) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(bad());
    };
    let n: f64 = number.trim().parse().map_err(|_| bad())?;
    // Negative, NaN or too large for a `Duration`: refused here; the layer checks the range.
    Duration::try_from_secs_f64(n * unit)
        .map_err(|_| format!("--chaos: latency needs a non-negative duration, got {value:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_fault_in_any_order() {
        let spec: ChaosSpec = " latency = 0.25:1.5s , abort=0.02,error=0.1"
            .parse()
            .unwrap();
        assert_eq!(
            spec,
            ChaosSpec {
                error: 0.1,
                abort: 0.02,
                latency: Some((0.25, Duration::from_millis(1500))),
            }
        );
        assert_eq!(
            spec.to_string(),
            "client-side ChaosLayer (--chaos): 10% of attempts fail before sending, 2% lose their response after being served, 25% are sent 1500 ms late; targets are calibrated without it"
        );
        let spec: ChaosSpec = "latency=1:0.5ms".parse().unwrap();
        assert_eq!(spec.latency, Some((1.0, Duration::from_micros(500))));
    }

    #[test]
    fn bad_specs_say_why() {
        for (spec, says) in [
            ("", "at least one"),
            (",", "at least one"),
            ("error", "KEY=VALUE"),
            ("error=x", "probability"),
            ("error=-0.1", "probability"),
            ("abort=1.01", "probability"),
            ("error=NaN", "probability"),
            ("error=0.1,error=0.2", "twice"),
            ("boom=0.1", "unknown fault"),
            ("latency=0.1", "P:DURATION"),
            ("latency=0.1:5", "duration"),
            ("latency=0.1:fast", "duration"),
            ("latency=0.1:-5ms", "non-negative"),
            ("latency=0.1:1e300s", "non-negative"),
            ("latency=0.1:2h", "duration"),
        ] {
            let err = spec.parse::<ChaosSpec>().unwrap_err();
            assert!(err.contains(says), "{spec:?}: {err}");
        }
        // The layer's own checks: error and abort together more than certain, a zero delay, a
        // delay over its 1 h cap.
        for spec in [
            "error=0.7,abort=0.7",
            "latency=0.5:0ms",
            "latency=0.1:7200s",
        ] {
            let err = spec.parse::<ChaosSpec>().unwrap_err();
            assert!(err.starts_with("--chaos: "), "{spec:?}: {err}");
        }
    }
}
