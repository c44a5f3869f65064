//! The circuit breaker's settings as a configuration file writes them (feature `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BreakDuration, CircuitBreakerLayer, CircuitBreakerLayerBuilder, SlidingWindow};
use crate::error::ConfigError;

/// A [`CircuitBreakerLayer`]'s settings, from JSON, TOML or YAML: every field optional, an
/// absent one keeping the builder's default ([`CircuitBreakerLayer::builder`], resilience4j's).
/// [`build`](Self::build) hands them to the builder, which validates them; its errors name the
/// field (`failure_rate`, `break_duration.cap`, `time_window.buckets`).
///
/// ```toml
/// count_window = 50                # or time_window = "30s" / { span = "30s", buckets = 10 }
/// failure_rate = 0.5
/// slow_call_duration = "2s"
/// slow_call_rate = 0.8
/// minimum_calls = 20
/// consecutive_failures = 5
/// half_open_probes = 3
/// break_duration = "30s"           # or { base = "5s", cap = "5m", multiplier = 2.0, jitter = 0.1 }
/// max_keys = 1000                  # when keyed (by code: `apply` on a keyed builder)
/// ```
///
/// ```
/// use steadfast_layers::breaker::CircuitBreakerConfig;
/// let config: CircuitBreakerConfig = serde_json::from_str(r#"{ "count_window": 20, "break_duration": "5s" }"#)?;
/// let layer = config.build()?;
/// # let _ = layer;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct CircuitBreakerConfig {
    /// A count window of the last `n` calls (default: 100 calls).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count_window: Option<u32>,
    /// A time window instead: `"30s"` (10 buckets) or `{ span = "30s", buckets = 10 }`.
    #[serde(
        default,
        deserialize_with = "crate::config::duration_or_table",
        skip_serializing_if = "Option::is_none"
    )]
    pub time_window: Option<TimeWindowConfig>,
    /// The failure rate that opens the breaker, as a fraction in `[0, 1]` (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
    /// A call slower than this is slow (default: no slow-call detection).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub slow_call_duration: Option<Duration>,
    /// The slow-call rate that opens the breaker, in `[0, 1]` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call_rate: Option<f64>,
    /// Calls in the window before a rate counts (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_calls: Option<u32>,
    /// Also opens after this many failures in a row (default: off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    /// Calls let through at once while half-open, in `[1, 1000]` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub half_open_probes: Option<u32>,
    /// Half-open lets probes through one by one, each success admitting the next (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progressive_half_open: Option<bool>,
    /// How long the breaker stays open (default: 60 s, constant).
    #[serde(
        default,
        deserialize_with = "crate::config::duration_or_table",
        skip_serializing_if = "Option::is_none"
    )]
    pub break_duration: Option<BreakDurationConfig>,
    /// The most keys tracked at once by a keyed breaker (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<usize>,
    /// A seed for the break duration's jitter (default: from entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// A time window: `"30s"`, or `{ span = "30s", buckets = 10 }` (default 10 buckets).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::breaker::TimeWindowConfig;
/// assert_eq!(TimeWindowConfig::from(Duration::from_secs(30)).buckets, None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TimeWindowConfig {
    /// The window's span.
    #[serde(with = "humantime_serde")]
    pub span: Duration,
    /// Buckets the span is cut into, in `[1, 1000]` (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
}

impl From<Duration> for TimeWindowConfig {
    fn from(span: Duration) -> Self {
        TimeWindowConfig {
            span,
            buckets: None,
        }
    }
}

/// A break duration: `"30s"` (constant), or `{ base = "5s", cap = "5m", multiplier = 2.0,
/// jitter = 0.1 }` (growing with each consecutive opening; the multiplier defaults to 2 when
/// a cap is given, to 1 otherwise).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::breaker::BreakDurationConfig;
/// let b: BreakDurationConfig = serde_json::from_str(r#"{ "base": "1s", "cap": "1m" }"#)?;
/// assert_eq!(b.to_break_duration().cap(), Duration::from_secs(60));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BreakDurationConfig {
    /// The first break (default 60 s).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub base: Option<Duration>,
    /// The longest break (default: the base).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cap: Option<Duration>,
    /// The growth factor per consecutive opening, in `[1, 100]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// The fraction of each break taken off at random, in `[0, 1]` (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<f64>,
}

impl From<Duration> for BreakDurationConfig {
    fn from(base: Duration) -> Self {
        BreakDurationConfig {
            base: Some(base),
            ..BreakDurationConfig::default()
        }
    }
}

impl BreakDurationConfig {
    /// The [`BreakDuration`] this describes (validated by the breaker's builder).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::breaker::{BreakDuration, BreakDurationConfig};
    /// let c = BreakDurationConfig::from(Duration::from_secs(5));
    /// assert_eq!(c.to_break_duration(), BreakDuration::constant(Duration::from_secs(5)));
    /// ```
    pub fn to_break_duration(&self) -> BreakDuration {
        let base = self.base.unwrap_or(BreakDuration::default().base());
        let mut d = match self.cap {
            Some(cap) => BreakDuration::exponential(base, cap),
            None => BreakDuration::constant(base),
        };
        if let Some(m) = self.multiplier {
            d = d.multiplier(m);
        }
        if let Some(j) = self.jitter {
            d = d.jitter(j);
        }
        d
    }
}

impl CircuitBreakerConfig {
    /// Sets what this configuration says on `builder` (whatever its classifier and key
    /// extractor). Both a count and a time window is an error at `time_window`.
    ///
    /// ```
    /// use steadfast_layers::breaker::{CircuitBreakerConfig, CircuitBreakerLayer};
    /// let config: CircuitBreakerConfig = serde_json::from_str(r#"{ "max_keys": 100 }"#)?;
    /// let keyed = config.apply(CircuitBreakerLayer::builder().key_by(|r: &String| r.clone()))?.build()?;
    /// # let _ = keyed;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<C, X>(
        &self,
        mut b: CircuitBreakerLayerBuilder<C, X>,
    ) -> Result<CircuitBreakerLayerBuilder<C, X>, ConfigError> {
        match (self.count_window, self.time_window) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::conflict(
                    "time_window",
                    "set either count_window or time_window",
                ))
            }
            (Some(n), None) => b = b.count_window(n),
            (None, Some(w)) => {
                b = b.window(match w.buckets {
                    Some(n) => SlidingWindow::time_with_buckets(w.span, n),
                    None => SlidingWindow::time(w.span),
                })
            }
            (None, None) => {}
        }
        if let Some(r) = self.failure_rate {
            b = b.failure_rate(r);
        }
        if let Some(d) = self.slow_call_duration {
            b = b.slow_call_duration(d);
        }
        if let Some(r) = self.slow_call_rate {
            b = b.slow_call_rate(r);
        }
        if let Some(n) = self.minimum_calls {
            b = b.minimum_calls(n);
        }
        if let Some(n) = self.consecutive_failures {
            b = b.consecutive_failures(n);
        }
        if let Some(n) = self.half_open_probes {
            b = b.half_open_probes(n);
        }
        if let Some(p) = self.progressive_half_open {
            b = b.progressive_half_open(p);
        }
        if let Some(d) = &self.break_duration {
            b = b.break_duration(d.to_break_duration());
        }
        if let Some(n) = self.max_keys {
            b = b.max_keys(n);
        }
        if let Some(s) = self.seed {
            b = b.seed(s);
        }
        Ok(b)
    }

    /// Builds the layer with [`CircuitBreakerLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use steadfast_layers::breaker::CircuitBreakerConfig;
    /// let config: CircuitBreakerConfig = serde_json::from_str(r#"{ "failure_rate": 1.5 }"#)?;
    /// assert_eq!(config.build().unwrap_err().path(), "failure_rate");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<CircuitBreakerLayer, ConfigError> {
        self.apply(CircuitBreakerLayer::builder())?.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::breaker::BreakerState;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_toml_and_json_alike_and_round_trips() {
        let toml_text = r#"
            time_window = { span = "30s", buckets = 6 }
            failure_rate = 0.25
            slow_call_duration = "2s"
            slow_call_rate = 0.8
            minimum_calls = 20
            consecutive_failures = 5
            half_open_probes = 3
            progressive_half_open = true
            break_duration = { base = "5s", cap = "5m", multiplier = 3.0, jitter = 0.1 }
            max_keys = 500
            seed = 1
        "#;
        let json = r#"{ "time_window": { "span": "30s", "buckets": 6 }, "failure_rate": 0.25,
            "slow_call_duration": "2s", "slow_call_rate": 0.8, "minimum_calls": 20,
            "consecutive_failures": 5, "half_open_probes": 3, "progressive_half_open": true,
            "break_duration": { "base": "5s", "cap": "5m", "multiplier": 3.0, "jitter": 0.1 },
            "max_keys": 500, "seed": 1 }"#;
        let a: CircuitBreakerConfig = toml::from_str(toml_text).unwrap();
        let b: CircuitBreakerConfig = serde_json::from_str(json).unwrap();
        assert_eq!(a, b);
        round_trip(&a);
        a.build().unwrap();
        let short: CircuitBreakerConfig =
            toml::from_str("time_window = \"10s\"\nbreak_duration = \"1s\"").unwrap();
        assert_eq!(
            short.time_window,
            Some(TimeWindowConfig::from(Duration::from_secs(10)))
        );
        assert_eq!(
            short.break_duration,
            Some(BreakDurationConfig::from(Duration::from_secs(1)))
        );
        round_trip(&short);
    }

    #[test]
    fn defaults_are_the_builders() {
        let config: CircuitBreakerConfig = toml::from_str("").unwrap();
        assert_eq!(config, CircuitBreakerConfig::default());
        assert_eq!(
            BreakDurationConfig::default().to_break_duration(),
            BreakDuration::default()
        );
        // An empty configuration leaves every builder setting as it was.
        assert_eq!(
            format!(
                "{:?}",
                config.apply(CircuitBreakerLayer::builder()).unwrap()
            ),
            format!("{:?}", CircuitBreakerLayer::builder())
        );
        assert_eq!(
            config.build().unwrap().handle().state(),
            BreakerState::Closed
        );
    }

    #[test]
    fn rejects_unknown_fields_and_invalid_values_with_their_path() {
        let err = toml::from_str::<CircuitBreakerConfig>("failure_ratio = 0.5").unwrap_err();
        assert!(err.to_string().contains("failure_ratio"), "{err}");
        let err = toml::from_str::<CircuitBreakerConfig>("break_duration = { bas = \"1s\" }")
            .unwrap_err();
        assert!(err.to_string().contains("bas"), "{err}");
        let cases = [
            ("failure_rate = 2.0", "failure_rate"),
            ("count_window = 0", "count_window"),
            ("count_window = 5\ntime_window = \"1s\"", "time_window"),
            (
                "time_window = { span = \"1s\", buckets = 0 }",
                "time_window.buckets",
            ),
            ("minimum_calls = 0", "minimum_calls"),
            ("half_open_probes = 0", "half_open_probes"),
            ("break_duration = \"0s\"", "break_duration"),
            (
                "break_duration = { base = \"2s\", cap = \"1s\" }",
                "break_duration.cap",
            ),
            ("slow_call_duration = \"0s\"", "slow_call_duration"),
            ("max_keys = 0", "max_keys"),
        ];
        for (text, path) in cases {
            let config: CircuitBreakerConfig = toml::from_str(text).unwrap();
            let err = config.build().unwrap_err();
            assert_eq!(err.path(), path, "{text}: {err}");
        }
    }
}
