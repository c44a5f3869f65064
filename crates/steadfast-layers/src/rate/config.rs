//! The rate limit's settings as a configuration file writes them (feature `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{RateLimitLayer, RateLimitLayerBuilder};
use crate::error::ConfigError;

/// A [`RateLimitLayer`]'s settings, from JSON, TOML or YAML: `requests` per `per` (both
/// required); the rest keep [`RateLimitLayer::builder`]'s defaults when absent (a burst of
/// `requests`, fail at once, 10,000 keys when keyed). The clock-read batching
/// ([`precision`](RateLimitLayerBuilder::precision)) is an implementation knob and not a
/// setting here.
///
/// ```
/// use std::time::Duration;
/// use steadfast_layers::rate::RateLimitConfig;
/// let config: RateLimitConfig = serde_json::from_str(r#"{ "requests": 100, "per": "1s", "burst": 10 }"#)?;
/// let layer = config.build()?;
/// assert_eq!((layer.interval(), layer.burst()), (Duration::from_millis(10), 10));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RateLimitConfig {
    /// Calls let through per `per`.
    pub requests: u32,
    /// The period of `requests`.
    #[serde(with = "humantime_serde")]
    pub per: Duration,
    /// Calls let through at once after a quiet period (default: `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// Wait for a cell instead of failing at once (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Wait only for a cell that comes within this long (implies `wait`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_wait: Option<Duration>,
    /// The most keys tracked at once when keyed (default 10,000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_keys: Option<usize>,
}

impl RateLimitConfig {
    /// A configuration of `requests` per `per`, the rest the builder's defaults.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitConfig;
    /// assert_eq!(RateLimitConfig::new(5, Duration::from_secs(1)).build()?.burst(), 5);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn new(requests: u32, per: Duration) -> Self {
        RateLimitConfig {
            requests,
            per,
            burst: None,
            wait: None,
            max_wait: None,
            max_keys: None,
        }
    }

    /// Sets what this configuration says, but the rate, on `builder` (a keyed one, say).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::{RateLimitConfig, RateLimitLayer};
    /// let c = RateLimitConfig::new(5, Duration::from_secs(1));
    /// let keyed = c.apply(RateLimitLayer::builder(c.requests, c.per).key_by(|r: &String| r.clone())).build()?;
    /// assert_eq!(keyed.keys(), Some(0));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn apply<X>(&self, mut b: RateLimitLayerBuilder<X>) -> RateLimitLayerBuilder<X> {
        if let Some(n) = self.burst {
            b = b.burst(n);
        }
        if self.wait == Some(true) {
            b = b.wait();
        }
        if let Some(w) = self.max_wait {
            b = b.max_wait(w);
        }
        if let Some(n) = self.max_keys {
            b = b.max_keys(n);
        }
        b
    }

    /// Builds the layer with [`RateLimitLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_layers::rate::RateLimitConfig;
    /// assert_eq!(RateLimitConfig::new(0, Duration::from_secs(1)).build().unwrap_err().path(), "requests");
    /// ```
    pub fn build(&self) -> Result<RateLimitLayer, ConfigError> {
        self.apply(RateLimitLayer::builder(self.requests, self.per))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: RateLimitConfig = toml::from_str(
            "requests = 100\nper = \"1s\"\nburst = 10\nmax_wait = \"20ms\"\nmax_keys = 50",
        )
        .unwrap();
        let b: RateLimitConfig = serde_json::from_str(
            r#"{"requests": 100, "per": "1s", "burst": 10, "max_wait": "20ms", "max_keys": 50}"#,
        )
        .unwrap();
        assert_eq!(a, b);
        round_trip(&a);
        let layer = a.build().unwrap();
        assert_eq!(
            (layer.interval(), layer.burst()),
            (Duration::from_millis(10), 10)
        );
        let plain: RateLimitConfig = toml::from_str("requests = 5\nper = \"1s\"").unwrap();
        assert_eq!(plain, RateLimitConfig::new(5, Duration::from_secs(1)));
        assert_eq!(
            format!(
                "{:?}",
                plain.apply(RateLimitLayer::builder(5, Duration::from_secs(1)))
            ),
            format!("{:?}", RateLimitLayer::builder(5, Duration::from_secs(1)))
        );
        assert!(toml::from_str::<RateLimitConfig>("requests = 5").is_err());
        assert!(toml::from_str::<RateLimitConfig>(
            "requests = 5\nper = \"1s\"\nprecision = \"1ms\""
        )
        .is_err());
        for (text, path) in [
            ("requests = 0\nper = \"1s\"", "requests"),
            ("requests = 1\nper = \"0s\"", "per"),
            ("requests = 1\nper = \"1s\"\nmax_wait = \"0s\"", "max_wait"),
            ("requests = 1\nper = \"1s\"\nmax_keys = 0", "max_keys"),
        ] {
            let c: RateLimitConfig = toml::from_str(text).unwrap();
            assert_eq!(c.build().unwrap_err().path(), path, "{text}");
        }
    }
}
