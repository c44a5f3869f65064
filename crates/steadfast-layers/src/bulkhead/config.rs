//! The bulkhead's settings as a configuration file writes them (feature `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{BulkheadLayer, BulkheadLayerBuilder};
use crate::error::ConfigError;

/// A [`BulkheadLayer`]'s settings, from JSON, TOML or YAML. `max_concurrent` is required; the
/// rest keep [`BulkheadLayer::builder`]'s defaults when absent (a queue as long as the limit,
/// waits of at most 1 s).
///
/// ```
/// use steadfast_layers::bulkhead::BulkheadConfig;
/// let config: BulkheadConfig = serde_json::from_str(r#"{ "max_concurrent": 4, "max_queue": 16 }"#)?;
/// let layer = config.build()?;
/// assert_eq!((layer.max_concurrent(), layer.max_queue()), (4, 16));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BulkheadConfig {
    /// Calls running at once at most.
    pub max_concurrent: usize,
    /// Calls waiting at most, in `[0, 1000000]` (default: `max_concurrent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_queue: Option<usize>,
    /// The longest wait in the queue (default 1 s).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_wait: Option<Duration>,
}

impl BulkheadConfig {
    /// A configuration of `max_concurrent` calls, the rest the builder's defaults.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadConfig;
    /// assert_eq!(BulkheadConfig::new(4).build()?.max_queue(), 4);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn new(max_concurrent: usize) -> Self {
        BulkheadConfig {
            max_concurrent,
            max_queue: None,
            max_wait: None,
        }
    }

    /// Sets what this configuration says, but `max_concurrent`, on `builder`.
    ///
    /// ```
    /// # use steadfast_layers::{bulkhead::{BulkheadConfig, BulkheadLayer}, telemetry::Telemetry};
    /// let c = BulkheadConfig::new(2);
    /// let l = c.apply(BulkheadLayer::builder(c.max_concurrent).telemetry(Telemetry::new().name("db"))).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn apply(&self, mut b: BulkheadLayerBuilder) -> BulkheadLayerBuilder {
        if let Some(n) = self.max_queue {
            b = b.max_queue(n);
        }
        if let Some(w) = self.max_wait {
            b = b.max_wait(w);
        }
        b
    }

    /// Builds the layer with [`BulkheadLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use steadfast_layers::bulkhead::BulkheadConfig;
    /// assert_eq!(BulkheadConfig::new(0).build().unwrap_err().path(), "max_concurrent");
    /// ```
    pub fn build(&self) -> Result<BulkheadLayer, ConfigError> {
        self.apply(BulkheadLayer::builder(self.max_concurrent))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: BulkheadConfig =
            toml::from_str("max_concurrent = 4\nmax_queue = 16\nmax_wait = \"250ms\"").unwrap();
        let b: BulkheadConfig =
            serde_json::from_str(r#"{"max_concurrent": 4, "max_queue": 16, "max_wait": "250ms"}"#)
                .unwrap();
        assert_eq!(a, b);
        round_trip(&a);
        let layer = a.build().unwrap();
        assert_eq!(
            (layer.max_concurrent(), layer.max_queue(), layer.max_wait()),
            (4, 16, Duration::from_millis(250))
        );
        let plain = BulkheadConfig::new(5).build().unwrap();
        let builder = BulkheadLayer::builder(5).build().unwrap();
        assert_eq!(
            (plain.max_queue(), plain.max_wait()),
            (builder.max_queue(), builder.max_wait())
        );
        assert!(toml::from_str::<BulkheadConfig>("max_queue = 1").is_err());
        assert!(toml::from_str::<BulkheadConfig>("max_concurrent = 1\nqueue = 1").is_err());
        for (text, path) in [
            ("max_concurrent = 0", "max_concurrent"),
            ("max_concurrent = 1\nmax_queue = 2000000", "max_queue"),
            ("max_concurrent = 1\nmax_wait = \"0s\"", "max_wait"),
        ] {
            let c: BulkheadConfig = toml::from_str(text).unwrap();
            assert_eq!(c.build().unwrap_err().path(), path, "{text}");
        }
    }
}
