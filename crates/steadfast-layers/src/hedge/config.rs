//! The hedge layer's settings as a configuration file writes them (feature `serde`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::{HedgeDelay, HedgeLayer, HedgeLayerBuilder};
use crate::error::ConfigError;
use crate::retry::{BudgetConfig, RatioBudget};

/// A [`HedgeLayer`]'s settings, from JSON, TOML or YAML: every field optional, an absent one
/// keeping [`HedgeLayer::builder`]'s default (the learned 95th percentile, one hedge, hedges
/// capped at 10 % of requests with a burst of 10).
///
/// ```toml
/// delay = "50ms"                   # or { percentile = 95.0, min_samples = 100, warmup_delay = "100ms", window = "30s" }
/// max_hedges = 2
/// budget_ratio = 0.05              # a fraction, like every budget
/// budget_burst = 10
/// budget = "shared"                # also draw from a budget shared with retries; "off": no budget at all
/// ```
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::hedge::HedgeConfig;
/// let config: HedgeConfig = serde_json::from_str(r#"{ "delay": "30ms", "max_hedges": 2 }"#)?;
/// let layer = config.build()?;
/// assert_eq!((layer.current_delay(), layer.max_hedges()), (Some(Duration::from_millis(30)), 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct HedgeConfig {
    /// When to hedge (default: the learned 95th percentile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<HedgeDelayConfig>,
    /// Hedges per call at most, in `[1, 10]` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_hedges: Option<u32>,
    /// Hedges at most this fraction of requests (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_ratio: Option<f64>,
    /// Hedges the budget may bank (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget_burst: Option<u32>,
    /// A budget to draw from besides the layer's own cap: a shared name or a table; `"off"`
    /// removes every budget (default: the layer's own cap only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
    /// The least deadline a hedge needs (default 1 ms).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_hedge_time: Option<Duration>,
}

/// When to hedge: a fixed delay (`"50ms"`), or a percentile of recent latencies learned from
/// a histogram (a table: `{ percentile = 95.0, min_samples = 100, warmup_delay = "100ms",
/// window = "30s" }`, each part defaulting to [`HedgeDelay::percentile`]'s).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::hedge::HedgeDelayConfig;
/// let d: HedgeDelayConfig = serde_json::from_str(r#""20ms""#)?;
/// assert_eq!(d.to_hedge_delay().fixed_delay(), Some(Duration::from_millis(20)));
/// let d: HedgeDelayConfig = serde_json::from_str(r#"{ "percentile": 99.0 }"#)?;
/// assert_eq!(d.to_hedge_delay().percentile_value(), Some(99.0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HedgeDelayConfig {
    /// After a fixed delay.
    Fixed(Duration),
    /// After a learned percentile.
    Percentile(PercentileDelayConfig),
}

/// A learned hedge delay's parts (see [`HedgeDelay::percentile`]); the recomputation pace is
/// an implementation knob and not a setting here.
///
/// ```
/// use steadfast_layers::hedge::PercentileDelayConfig;
/// let p: PercentileDelayConfig = serde_json::from_str(r#"{ "window": "1m" }"#)?;
/// assert_eq!(p.window, Some(std::time::Duration::from_secs(60)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PercentileDelayConfig {
    /// The percentile, strictly between 0 and 100 (default 95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentile: Option<f64>,
    /// Samples needed before the percentile is used (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// The delay to hedge after until then (default: no hedge until then).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub warmup_delay: Option<Duration>,
    /// The span of latencies counted, in `[1 s, 1 h]` (default 30 s).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
}

impl HedgeDelayConfig {
    /// The [`HedgeDelay`] this describes (validated by the hedge layer's builder).
    ///
    /// ```
    /// # use steadfast_layers::hedge::{HedgeDelay, HedgeDelayConfig, PercentileDelayConfig};
    /// let d = HedgeDelayConfig::Percentile(PercentileDelayConfig::default());
    /// assert_eq!(d.to_hedge_delay(), HedgeDelay::default());
    /// ```
    pub fn to_hedge_delay(&self) -> HedgeDelay {
        match self {
            HedgeDelayConfig::Fixed(d) => HedgeDelay::fixed(*d),
            HedgeDelayConfig::Percentile(p) => {
                let default = HedgeDelay::default().percentile_value().unwrap_or(95.0);
                let mut d = HedgeDelay::percentile(p.percentile.unwrap_or(default));
                if let Some(n) = p.min_samples {
                    d = d.min_samples(n);
                }
                if let Some(w) = p.warmup_delay {
                    d = d.warmup_delay(w);
                }
                if let Some(w) = p.window {
                    d = d.window(w);
                }
                d
            }
        }
    }
}

impl HedgeConfig {
    /// Sets what this configuration says on `builder` (whatever its policy, classifier and
    /// replay); a budget named here is an error (see [`apply_with`](Self::apply_with)).
    ///
    /// ```
    /// # use steadfast_layers::hedge::{HedgeConfig, HedgeLayer};
    /// let c: HedgeConfig = serde_json::from_str(r#"{ "max_hedges": 3 }"#)?;
    /// assert_eq!(c.apply(HedgeLayer::builder())?.build()?.max_hedges(), 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<P, C, R>(
        &self,
        builder: HedgeLayerBuilder<P, C, R>,
    ) -> Result<HedgeLayerBuilder<P, C, R>, ConfigError> {
        self.apply_with(builder, &|_| None)
    }

    /// As [`apply`](Self::apply), finding a named budget with `shared`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use steadfast_layers::{hedge::{HedgeConfig, HedgeLayer}, retry::RatioBudget};
    /// let shared = Arc::new(RatioBudget::builder().build()?);
    /// let c: HedgeConfig = serde_json::from_str(r#"{ "budget": "api" }"#)?;
    /// let l = c.apply_with(HedgeLayer::builder(), &|n| (n == "api").then(|| shared.clone()))?.build()?;
    /// # let _ = l;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_with<P, C, R>(
        &self,
        mut b: HedgeLayerBuilder<P, C, R>,
        shared: &dyn Fn(&str) -> Option<Arc<RatioBudget>>,
    ) -> Result<HedgeLayerBuilder<P, C, R>, ConfigError> {
        if let Some(d) = &self.delay {
            b = b.delay(d.to_hedge_delay());
        }
        if let Some(n) = self.max_hedges {
            b = b.max_hedges(n);
        }
        if let Some(r) = self.budget_ratio {
            b = b.budget_ratio(r);
        }
        if let Some(n) = self.budget_burst {
            b = b.budget_burst(n);
        }
        if let Some(t) = self.min_hedge_time {
            b = b.min_hedge_time(t);
        }
        match &self.budget {
            None => {}
            Some(BudgetConfig::Off) => b = b.no_budget(),
            Some(BudgetConfig::Ratio(r)) => {
                b = b.budget(Arc::new(r.build().map_err(|e| e.at("budget"))?));
            }
            Some(BudgetConfig::Named(name)) => match shared(name) {
                Some(budget) => b = b.budget(budget),
                None => {
                    return Err(ConfigError::conflict(
                        "budget",
                        "names no budget of the policy set's `budgets`",
                    ))
                }
            },
        }
        Ok(b)
    }

    /// Builds the layer with [`HedgeLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use steadfast_layers::hedge::HedgeConfig;
    /// let c: HedgeConfig = serde_json::from_str(r#"{ "delay": { "percentile": 100.0 } }"#)?;
    /// assert_eq!(c.build().unwrap_err().path(), "delay.percentile");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<HedgeLayer, ConfigError> {
        self.apply(HedgeLayer::builder())?.build()
    }
}

impl Serialize for HedgeDelayConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            HedgeDelayConfig::Fixed(d) => s.collect_str(&humantime::format_duration(*d)),
            HedgeDelayConfig::Percentile(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for HedgeDelayConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = HedgeDelayConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"50ms\", or a table { percentile, min_samples, warmup_delay, window }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HedgeDelayConfig, E> {
                crate::config::parse_duration(v).map(HedgeDelayConfig::Fixed)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<HedgeDelayConfig, A::Error> {
                PercentileDelayConfig::deserialize(MapAccessDeserializer::new(map))
                    .map(HedgeDelayConfig::Percentile)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: HedgeConfig = toml::from_str(
            r#"
            delay = { percentile = 99.0, min_samples = 50, warmup_delay = "100ms", window = "1m" }
            max_hedges = 2
            budget_ratio = 0.05
            budget_burst = 5
            min_hedge_time = "2ms"
            "#,
        )
        .unwrap();
        let b: HedgeConfig = serde_json::from_str(
            r#"{"delay": {"percentile": 99.0, "min_samples": 50, "warmup_delay": "100ms", "window": "1m"},
                "max_hedges": 2, "budget_ratio": 0.05, "budget_burst": 5, "min_hedge_time": "2ms"}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        round_trip(&a);
        let layer = a.build().unwrap();
        assert_eq!(layer.max_hedges(), 2);
        assert_eq!(layer.current_delay(), Some(Duration::from_millis(100))); // the warm-up delay
        let fixed: HedgeConfig = toml::from_str("delay = \"20ms\"\nbudget = \"off\"").unwrap();
        round_trip(&fixed);
        assert_eq!(
            fixed.build().unwrap().current_delay(),
            Some(Duration::from_millis(20))
        );
    }

    #[test]
    fn defaults_are_the_builders() {
        let c: HedgeConfig = toml::from_str("").unwrap();
        assert_eq!(
            format!("{:?}", c.apply(HedgeLayer::builder()).unwrap()),
            format!("{:?}", HedgeLayer::builder())
        );
        assert_eq!(
            HedgeDelayConfig::Percentile(PercentileDelayConfig::default()).to_hedge_delay(),
            HedgeDelay::default()
        );
    }

    #[test]
    fn rejects_unknown_fields_and_invalid_values_with_their_path() {
        assert!(toml::from_str::<HedgeConfig>("hedges = 1").is_err());
        assert!(toml::from_str::<HedgeConfig>("delay = { pct = 90.0 }").is_err());
        assert!(toml::from_str::<HedgeConfig>("delay = \"fast\"").is_err());
        for (text, path) in [
            ("max_hedges = 0", "max_hedges"),
            ("max_hedges = 11", "max_hedges"),
            ("budget_ratio = 0.0", "budget_ratio"),
            ("delay = \"2h\"", "delay"),
            ("delay = { window = \"2h\" }", "delay.window"),
            ("budget = \"shared\"", "budget"),
            ("budget = { ratio = 20.0 }", "budget.ratio"),
        ] {
            let c: HedgeConfig = toml::from_str(text).unwrap();
            assert_eq!(c.build().unwrap_err().path(), path, "{text}");
        }
    }
}
