//! Client-side adaptive throttling's settings as a configuration file writes them (feature
//! `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ThrottleLayer, ThrottleLayerBuilder};
use crate::error::ConfigError;

/// A [`ThrottleLayer`]'s settings, from JSON, TOML or YAML: every field optional, an absent one
/// keeping [`ThrottleLayer::builder`]'s default (Google SRE's: K = 2, a 2-minute window in 12
/// buckets).
///
/// ```
/// use steadfast_layers::adaptive_throttle::ThrottleConfig;
/// let config: ThrottleConfig = serde_json::from_str(r#"{ "k": 1.5, "window": "1m", "buckets": 6 }"#)?;
/// assert_eq!(config.build()?.k(), 1.5);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ThrottleConfig {
    /// The multiplier K: requests are refused locally as they exceed K times the accepts
    /// (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<f64>,
    /// The span of history counted (default 2 min).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub window: Option<Duration>,
    /// Buckets the window is cut into (default 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buckets: Option<u32>,
    /// A seed for the random refusals (default: from entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl ThrottleConfig {
    /// Sets what this configuration says on `builder` (whatever its classifier).
    ///
    /// ```
    /// # use steadfast_layers::adaptive_throttle::{ThrottleConfig, ThrottleLayer};
    /// let config: ThrottleConfig = serde_json::from_str(r#"{ "k": 3.0 }"#)?;
    /// assert_eq!(config.apply(ThrottleLayer::builder()).build()?.k(), 3.0);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<C>(&self, mut b: ThrottleLayerBuilder<C>) -> ThrottleLayerBuilder<C> {
        if let Some(k) = self.k {
            b = b.k(k);
        }
        if let Some(w) = self.window {
            b = b.window(w);
        }
        if let Some(n) = self.buckets {
            b = b.buckets(n);
        }
        if let Some(s) = self.seed {
            b = b.seed(s);
        }
        b
    }

    /// Builds the layer with [`ThrottleLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use steadfast_layers::adaptive_throttle::ThrottleConfig;
    /// let config: ThrottleConfig = serde_json::from_str(r#"{ "k": 0.5 }"#)?;
    /// assert_eq!(config.build().unwrap_err().path(), "k");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<ThrottleLayer, ConfigError> {
        self.apply(ThrottleLayer::builder()).build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: ThrottleConfig =
            toml::from_str("k = 1.5\nwindow = \"1m\"\nbuckets = 6\nseed = 3").unwrap();
        let b: ThrottleConfig =
            serde_json::from_str(r#"{"k": 1.5, "window": "60s", "buckets": 6, "seed": 3}"#)
                .unwrap();
        assert_eq!(a, b);
        round_trip(&a);
        assert_eq!(a.build().unwrap().k(), 1.5);
        let empty: ThrottleConfig = toml::from_str("").unwrap();
        assert_eq!(
            format!("{:?}", empty.apply(ThrottleLayer::builder())),
            format!("{:?}", ThrottleLayer::builder())
        );
        assert!(toml::from_str::<ThrottleConfig>("K = 2.0").is_err());
        for (text, path) in [
            ("k = 0.5", "k"),
            ("buckets = 0", "buckets"),
            ("window = \"0s\"", "window"),
        ] {
            let c: ThrottleConfig = toml::from_str(text).unwrap();
            assert_eq!(c.build().unwrap_err().path(), path, "{text}");
        }
    }
}
