//! The attempt timeout's settings as a configuration file writes them (feature `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::AttemptTimeoutLayer;
use crate::error::ConfigError;
use crate::telemetry::Telemetry;

/// An [`AttemptTimeoutLayer`]'s settings, from JSON, TOML or YAML: `attempt_timeout = "500ms"` bounds
/// each attempt; without it each attempt is bounded by the deadline only
/// ([`AttemptTimeoutLayer::deadline_only`]).
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::timeout::AttemptTimeoutConfig;
/// let config: AttemptTimeoutConfig = serde_json::from_str(r#"{ "attempt_timeout": "500ms" }"#)?;
/// assert_eq!(config.build()?.timeout(), Some(Duration::from_millis(500)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct AttemptTimeoutConfig {
    /// The time each attempt may take (default: none, the deadline only).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub attempt_timeout: Option<Duration>,
}

impl AttemptTimeoutConfig {
    /// Builds the layer with [`AttemptTimeoutLayer::with_telemetry`], which validates it.
    ///
    /// ```
    /// # use steadfast_layers::{telemetry::Telemetry, timeout::AttemptTimeoutConfig};
    /// let config: AttemptTimeoutConfig = serde_json::from_str(r#"{ "attempt_timeout": "0s" }"#)?;
    /// assert_eq!(config.build_with(&Telemetry::default()).unwrap_err().path(), "attempt_timeout");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build_with(&self, telemetry: &Telemetry) -> Result<AttemptTimeoutLayer, ConfigError> {
        AttemptTimeoutLayer::with_telemetry(self.attempt_timeout, telemetry)
    }

    /// Builds the layer with the default telemetry.
    ///
    /// ```
    /// # use steadfast_layers::timeout::AttemptTimeoutConfig;
    /// assert_eq!(AttemptTimeoutConfig::default().build()?.timeout(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<AttemptTimeoutLayer, ConfigError> {
        self.build_with(&Telemetry::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: AttemptTimeoutConfig = toml::from_str("attempt_timeout = \"250ms\"").unwrap();
        let b: AttemptTimeoutConfig =
            serde_json::from_str(r#"{"attempt_timeout":"250ms"}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            a.build().unwrap().timeout(),
            Some(Duration::from_millis(250))
        );
        round_trip(&a);
        assert_eq!(
            AttemptTimeoutConfig::default().build().unwrap().timeout(),
            AttemptTimeoutLayer::deadline_only().timeout()
        );
        assert!(toml::from_str::<AttemptTimeoutConfig>("time = \"1s\"").is_err());
        let zero: AttemptTimeoutConfig = toml::from_str("attempt_timeout = \"0s\"").unwrap();
        assert_eq!(zero.build().unwrap_err().path(), "attempt_timeout");
    }
}
