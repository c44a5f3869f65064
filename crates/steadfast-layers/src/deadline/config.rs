//! The deadline layer's settings as a configuration file writes them (feature `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{DeadlineLayer, DeadlineLayerBuilder};
use crate::error::ConfigError;

/// A [`DeadlineLayer`]'s settings, from JSON, TOML or YAML: `timeout = "2s"` gives every call
/// at most that long, all attempts and backoffs included; without it the layer only enforces a
/// deadline inherited from the caller ([`DeadlineLayer::builder`]'s default).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::deadline::DeadlineConfig;
/// let config: DeadlineConfig = serde_json::from_str(r#"{ "timeout": "2s" }"#)?;
/// assert_eq!(config.build()?.timeout(), Some(Duration::from_secs(2)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeadlineConfig {
    /// The total time a call may take (default: none, the inherited deadline only).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
}

impl DeadlineConfig {
    /// Sets what this configuration says on `builder` (whatever its carrier).
    ///
    /// ```
    /// # use steadfast_layers::deadline::{DeadlineConfig, DeadlineLayer};
    /// let config: DeadlineConfig = serde_json::from_str(r#"{ "timeout": "0s" }"#)?;
    /// assert_eq!(config.apply(DeadlineLayer::builder()).build().unwrap_err().path(), "timeout");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<C>(&self, builder: DeadlineLayerBuilder<C>) -> DeadlineLayerBuilder<C> {
        match self.timeout {
            Some(t) => builder.timeout(t),
            None => builder,
        }
    }

    /// Builds the layer with [`DeadlineLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use steadfast_layers::deadline::DeadlineConfig;
    /// assert_eq!(DeadlineConfig::default().build()?.timeout(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<DeadlineLayer, ConfigError> {
        self.apply(DeadlineLayer::builder()).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: DeadlineConfig = toml::from_str("timeout = \"1m 30s\"").unwrap();
        let b: DeadlineConfig = serde_json::from_str(r#"{"timeout":"90s"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.build().unwrap().timeout(), Some(Duration::from_secs(90)));
        round_trip(&a);
        round_trip(&DeadlineConfig::default());
        assert_eq!(
            DeadlineConfig::default().build().unwrap().timeout(),
            DeadlineLayer::builder().build().unwrap().timeout()
        );
        assert!(toml::from_str::<DeadlineConfig>("timout = \"1s\"").is_err());
        let zero: DeadlineConfig = toml::from_str("timeout = \"0s\"").unwrap();
        assert_eq!(zero.build().unwrap_err().path(), "timeout");
    }
}
