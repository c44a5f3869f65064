//! The adaptive concurrency limit's settings as a configuration file writes them (feature
//! `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    AdaptiveLimitLayer, AdaptiveLimitLayerBuilder, Aimd, Algorithm, Gradient2, Samples, Vegas,
};
use crate::error::ConfigError;
use crate::rng::RandomSource;

/// An [`AdaptiveLimitLayer`]'s settings, from JSON, TOML or YAML: every field optional, an
/// absent one keeping [`AdaptiveLimitLayer::builder`]'s default (Vegas with Netflix's
/// parameters, a 100 ms window of at least 10 calls, cancelled calls counted as drops).
///
/// ```toml
/// window = "100ms"
/// min_samples = 10
/// algorithm = { gradient2 = { initial_limit = 20, max_limit = 200, tolerance = 1.5 } }
/// ```
///
/// ```
/// use steadfast_layers::adaptive_limit::AdaptiveLimitConfig;
/// let config: AdaptiveLimitConfig = serde_json::from_str(r#"{ "algorithm": { "aimd": { "initial_limit": 5 } } }"#)?;
/// let layer = config.build()?;
/// assert_eq!((layer.handle().algorithm(), layer.handle().limit()), ("aimd", 5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AdaptiveLimitConfig {
    /// The algorithm and its parameters (default: Vegas).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<AlgorithmConfig>,
    /// How long samples are gathered between updates (default 100 ms).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    /// Calls a window needs before it updates the limit (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// Calls whose caller gave up count as drops (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_as_drops: Option<bool>,
    /// A seed for the algorithms' randomness (default: from entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// Which algorithm computes the limit, with its parameters (each optional, defaulting to the
/// algorithm's builder: Netflix's concurrency-limits defaults): `{ aimd = { ... } }`,
/// `{ gradient2 = { ... } }` or `{ vegas = { ... } }`.
///
/// ```
/// use steadfast_layers::adaptive_limit::{AlgorithmConfig, Algorithm};
/// let a: AlgorithmConfig = serde_json::from_str(r#"{ "vegas": { "max_limit": 50 } }"#)?;
/// assert_eq!(a.build()?.name(), "vegas");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AlgorithmConfig {
    /// [`Aimd`]: additive increase, multiplicative decrease on drops.
    Aimd(AimdConfig),
    /// [`Gradient2`]: the ratio of long-term to short-term latency.
    Gradient2(Gradient2Config),
    /// [`Vegas`]: the queue estimated from the no-load latency.
    Vegas(VegasConfig),
}

/// [`Aimd`]'s parameters.
///
/// ```
/// use steadfast_layers::adaptive_limit::AimdConfig;
/// let c: AimdConfig = serde_json::from_str(r#"{ "backoff_ratio": 0.8, "timeout": "2s" }"#)?;
/// assert!(c.build().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AimdConfig {
    /// The starting limit (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_limit: Option<usize>,
    /// The lowest limit (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_limit: Option<usize>,
    /// The highest limit (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_limit: Option<usize>,
    /// The factor applied to the limit on a drop (default 0.9).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ratio: Option<f64>,
    /// A call slower than this counts as a drop (default 5 s).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

/// [`Gradient2`]'s parameters.
///
/// ```
/// use steadfast_layers::adaptive_limit::Gradient2Config;
/// let c: Gradient2Config = serde_json::from_str(r#"{ "tolerance": 2.0 }"#)?;
/// assert!(c.build().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Gradient2Config {
    /// The starting limit (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_limit: Option<usize>,
    /// The lowest limit (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_limit: Option<usize>,
    /// The highest limit (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_limit: Option<usize>,
    /// How much slower than the long-term latency is tolerated (default 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<f64>,
    /// The weight of a new estimate (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<f64>,
    /// The queue allowed above the gradient's limit (default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_size: Option<usize>,
    /// Updates in the long-term latency average (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_window: Option<u32>,
    /// The long-term latency's cap, as a multiple of the short-term (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub long_rtt_cap: Option<f64>,
    /// Updates between probes of the no-load latency (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<u32>,
    /// The limit during a probe (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_limit: Option<usize>,
}

/// [`Vegas`]'s parameters.
///
/// ```
/// use steadfast_layers::adaptive_limit::VegasConfig;
/// let c: VegasConfig = serde_json::from_str(r#"{ "alpha_beta": [2.0, 4.0] }"#)?;
/// assert!(c.build().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct VegasConfig {
    /// The starting limit (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_limit: Option<usize>,
    /// The lowest limit (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_limit: Option<usize>,
    /// The highest limit (default 1,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_limit: Option<usize>,
    /// The weight of a new estimate, in `(0, 1]` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothing: Option<f64>,
    /// Probes of the no-load latency every `probe_multiplier` times the limit (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_multiplier: Option<u32>,
    /// The queue thresholds, as multiples of log10(limit): `[alpha, beta]` (default `[3, 6]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha_beta: Option<[f64; 2]>,
}

/// The algorithm a configuration chose: one type for the three, so that a configured layer
/// has one type (`AdaptiveLimitLayer<ConfiguredAlgorithm>`) whichever the file names.
///
/// ```
/// use steadfast_layers::adaptive_limit::{Algorithm, ConfiguredAlgorithm, Vegas};
/// assert_eq!(ConfiguredAlgorithm::Vegas(Vegas::default()).name(), "vegas");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfiguredAlgorithm {
    /// [`Aimd`].
    Aimd(Aimd),
    /// [`Gradient2`].
    Gradient2(Gradient2),
    /// [`Vegas`].
    Vegas(Vegas),
}

impl Algorithm for ConfiguredAlgorithm {
    fn name(&self) -> &'static str {
        match self {
            ConfiguredAlgorithm::Aimd(a) => a.name(),
            ConfiguredAlgorithm::Gradient2(a) => a.name(),
            ConfiguredAlgorithm::Vegas(a) => a.name(),
        }
    }

    fn initial_limit(&self) -> usize {
        match self {
            ConfiguredAlgorithm::Aimd(a) => a.initial_limit(),
            ConfiguredAlgorithm::Gradient2(a) => a.initial_limit(),
            ConfiguredAlgorithm::Vegas(a) => a.initial_limit(),
        }
    }

    fn update(&mut self, samples: &Samples, rng: &dyn RandomSource) -> usize {
        match self {
            ConfiguredAlgorithm::Aimd(a) => a.update(samples, rng),
            ConfiguredAlgorithm::Gradient2(a) => a.update(samples, rng),
            ConfiguredAlgorithm::Vegas(a) => a.update(samples, rng),
        }
    }
}

macro_rules! set {
    ($b:ident, $self:ident, $($field:ident),*) => {
        $( if let Some(v) = $self.$field { $b = $b.$field(v); } )*
    };
}

impl AimdConfig {
    /// Builds the algorithm with [`Aimd::builder`], which validates it.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AimdConfig;
    /// let c: AimdConfig = serde_json::from_str(r#"{ "initial_limit": 0 }"#)?;
    /// assert_eq!(c.build().unwrap_err().path(), "initial_limit");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<Aimd, ConfigError> {
        let mut b = Aimd::builder();
        set!(
            b,
            self,
            initial_limit,
            min_limit,
            max_limit,
            backoff_ratio,
            timeout
        );
        b.build()
    }
}

impl Gradient2Config {
    /// Builds the algorithm with [`Gradient2::builder`], which validates it.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::Gradient2Config;
    /// let c: Gradient2Config = serde_json::from_str(r#"{ "smoothing": 2.0 }"#)?;
    /// assert_eq!(c.build().unwrap_err().path(), "smoothing");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<Gradient2, ConfigError> {
        let mut b = Gradient2::builder();
        set!(
            b,
            self,
            initial_limit,
            min_limit,
            max_limit,
            tolerance,
            smoothing,
            queue_size,
            long_window,
            long_rtt_cap,
            probe_interval,
            probe_limit
        );
        b.build()
    }
}

impl VegasConfig {
    /// Builds the algorithm with [`Vegas::builder`], which validates it.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::VegasConfig;
    /// let c: VegasConfig = serde_json::from_str(r#"{ "alpha_beta": [6.0, 3.0] }"#)?;
    /// assert_eq!(c.build().unwrap_err().path(), "alpha_beta");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<Vegas, ConfigError> {
        let mut b = Vegas::builder();
        set!(
            b,
            self,
            initial_limit,
            min_limit,
            max_limit,
            smoothing,
            probe_multiplier
        );
        if let Some([alpha, beta]) = self.alpha_beta {
            b = b.alpha_beta(alpha, beta);
        }
        b.build()
    }
}

impl AlgorithmConfig {
    /// Builds the chosen algorithm; its errors are under `aimd.`, `gradient2.` or `vegas.`.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AlgorithmConfig;
    /// let a: AlgorithmConfig = serde_json::from_str(r#"{ "aimd": { "backoff_ratio": 1.5 } }"#)?;
    /// assert_eq!(a.build().unwrap_err().path(), "aimd.backoff_ratio");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<ConfiguredAlgorithm, ConfigError> {
        Ok(match self {
            AlgorithmConfig::Aimd(c) => {
                ConfiguredAlgorithm::Aimd(c.build().map_err(|e| e.at("aimd"))?)
            }
            AlgorithmConfig::Gradient2(c) => {
                ConfiguredAlgorithm::Gradient2(c.build().map_err(|e| e.at("gradient2"))?)
            }
            AlgorithmConfig::Vegas(c) => {
                ConfiguredAlgorithm::Vegas(c.build().map_err(|e| e.at("vegas"))?)
            }
        })
    }
}

impl AdaptiveLimitConfig {
    /// Sets what this configuration says, but the algorithm, on `builder`.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::{AdaptiveLimitConfig, AdaptiveLimitLayer};
    /// let c: AdaptiveLimitConfig = serde_json::from_str(r#"{ "min_samples": 0 }"#)?;
    /// assert_eq!(c.apply(AdaptiveLimitLayer::builder()).build().unwrap_err().path(), "min_samples");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<A, C>(
        &self,
        mut b: AdaptiveLimitLayerBuilder<A, C>,
    ) -> AdaptiveLimitLayerBuilder<A, C> {
        set!(b, self, window, min_samples, cancelled_as_drops, seed);
        b
    }

    /// Builds the layer with [`AdaptiveLimitLayer::builder`] and the algorithm's builder, which
    /// validate the settings.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_limit::AdaptiveLimitConfig;
    /// let c: AdaptiveLimitConfig = serde_json::from_str(r#"{ "algorithm": { "vegas": { "smoothing": 0.0 } } }"#)?;
    /// assert_eq!(c.build().unwrap_err().path(), "algorithm.vegas.smoothing");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<AdaptiveLimitLayer<ConfiguredAlgorithm>, ConfigError> {
        let algorithm = match &self.algorithm {
            Some(a) => a.build().map_err(|e| e.at("algorithm"))?,
            None => ConfiguredAlgorithm::Vegas(Vegas::default()),
        };
        self.apply(AdaptiveLimitLayer::builder().algorithm(algorithm))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: AdaptiveLimitConfig = toml::from_str(
            r#"
            window = "200ms"
            min_samples = 5
            cancelled_as_drops = false
            seed = 2
            algorithm = { gradient2 = { initial_limit = 10, max_limit = 100, tolerance = 2.0, long_window = 100 } }
            "#,
        )
        .unwrap();
        let b: AdaptiveLimitConfig = serde_json::from_str(
            r#"{"window": "200ms", "min_samples": 5, "cancelled_as_drops": false, "seed": 2,
                "algorithm": {"gradient2": {"initial_limit": 10, "max_limit": 100, "tolerance": 2.0, "long_window": 100}}}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        round_trip(&a);
        let layer = a.build().unwrap();
        assert_eq!(layer.handle().algorithm(), "gradient2");
        assert_eq!(layer.handle().limit(), 10);
        for algorithm in [
            AlgorithmConfig::Aimd(AimdConfig {
                timeout: Some(Duration::from_secs(1)),
                ..AimdConfig::default()
            }),
            AlgorithmConfig::Vegas(VegasConfig {
                alpha_beta: Some([2.0, 4.0]),
                ..VegasConfig::default()
            }),
        ] {
            let c = AdaptiveLimitConfig {
                algorithm: Some(algorithm),
                ..AdaptiveLimitConfig::default()
            };
            round_trip(&c);
            c.build().unwrap();
        }
    }

    #[test]
    fn defaults_are_the_builders() {
        let c: AdaptiveLimitConfig = toml::from_str("").unwrap();
        let from_config = c.build().unwrap();
        let from_builder = AdaptiveLimitLayer::builder().build().unwrap();
        assert_eq!(
            from_config.handle().algorithm(),
            from_builder.handle().algorithm()
        );
        assert_eq!(from_config.handle().limit(), from_builder.handle().limit());
        assert_eq!(
            format!("{:?}", AimdConfig::default().build().unwrap()),
            format!("{:?}", Aimd::default())
        );
        assert_eq!(
            format!("{:?}", VegasConfig::default().build().unwrap()),
            format!("{:?}", Vegas::builder().build().unwrap())
        );
        assert_eq!(
            format!("{:?}", Gradient2Config::default().build().unwrap()),
            format!("{:?}", Gradient2::builder().build().unwrap())
        );
    }

    #[test]
    fn rejects_unknown_fields_and_invalid_values_with_their_path() {
        assert!(toml::from_str::<AdaptiveLimitConfig>("windw = \"1s\"").is_err());
        assert!(toml::from_str::<AdaptiveLimitConfig>("algorithm = { bbr = {} }").is_err());
        assert!(
            toml::from_str::<AdaptiveLimitConfig>("algorithm = { aimd = { limit = 3 } }").is_err()
        );
        for (text, path) in [
            ("min_samples = 0", "min_samples"),
            (
                "algorithm = { aimd = { initial_limit = 0 } }",
                "algorithm.aimd.initial_limit",
            ),
            (
                "algorithm = { gradient2 = { smoothing = 5.0 } }",
                "algorithm.gradient2.smoothing",
            ),
            (
                "algorithm = { vegas = { alpha_beta = [6.0, 3.0] } }",
                "algorithm.vegas.alpha_beta",
            ),
        ] {
            let c: AdaptiveLimitConfig = toml::from_str(text).unwrap();
            assert_eq!(c.build().unwrap_err().path(), path, "{text}");
        }
    }
}
