//! The concurrency limit's settings as a configuration file writes them (feature `serde`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConcurrencyLimitLayer, ConcurrencyLimitLayerBuilder};
use crate::error::ConfigError;

/// A [`ConcurrencyLimitLayer`]'s settings, from JSON, TOML or YAML. `max_in_flight` is
/// required; the rest keep [`ConcurrencyLimitLayer::builder`]'s defaults when absent (fail at
/// once when full, 10,000 keys when keyed).
///
/// ```
/// use steadfast_layers::limit::ConcurrencyLimitConfig;
/// let config: ConcurrencyLimitConfig = serde_json::from_str(r#"{ "max_in_flight": 8, "max_wait": "50ms" }"#)?;
/// let layer = config.build()?;
/// assert_eq!((layer.max_in_flight(), layer.waits()), (8, true));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ConcurrencyLimitConfig {
    /// Calls in flight at most.
    pub max_in_flight: usize,
    /// Wait for a permit, unbounded, instead of failing at once (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<bool>,
    /// Wait for a permit at most this long (implies `wait`).
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

impl ConcurrencyLimitConfig {
    /// A configuration of `max_in_flight` calls, the rest the builder's defaults.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitConfig;
    /// assert_eq!(ConcurrencyLimitConfig::new(4).build()?.max_in_flight(), 4);
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn new(max_in_flight: usize) -> Self {
        ConcurrencyLimitConfig {
            max_in_flight,
            wait: None,
            max_wait: None,
            max_keys: None,
        }
    }

    /// Sets what this configuration says, but `max_in_flight`, on `builder` (a keyed one, say).
    ///
    /// ```
    /// # use steadfast_layers::limit::{ConcurrencyLimitConfig, ConcurrencyLimitLayer};
    /// let config = ConcurrencyLimitConfig::new(2);
    /// let keyed = config.apply(ConcurrencyLimitLayer::builder(config.max_in_flight).key_by(|r: &String| r.clone())).build()?;
    /// assert_eq!(keyed.keys(), Some(0));
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn apply<X>(
        &self,
        mut b: ConcurrencyLimitLayerBuilder<X>,
    ) -> ConcurrencyLimitLayerBuilder<X> {
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

    /// Builds the layer with [`ConcurrencyLimitLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use steadfast_layers::limit::ConcurrencyLimitConfig;
    /// assert_eq!(ConcurrencyLimitConfig::new(0).build().unwrap_err().path(), "max_in_flight");
    /// ```
    pub fn build(&self) -> Result<ConcurrencyLimitLayer, ConfigError> {
        self.apply(ConcurrencyLimitLayer::builder(self.max_in_flight))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_validates() {
        let a: ConcurrencyLimitConfig =
            toml::from_str("max_in_flight = 8\nmax_wait = \"50ms\"\nmax_keys = 100").unwrap();
        let b: ConcurrencyLimitConfig =
            serde_json::from_str(r#"{"max_in_flight": 8, "max_wait": "50ms", "max_keys": 100}"#)
                .unwrap();
        assert_eq!(a, b);
        round_trip(&a);
        let layer = a.build().unwrap();
        assert_eq!((layer.max_in_flight(), layer.waits()), (8, true));
        let wait: ConcurrencyLimitConfig =
            toml::from_str("max_in_flight = 1\nwait = true").unwrap();
        assert!(wait.build().unwrap().waits());
        // Defaults: the builder's.
        let plain: ConcurrencyLimitConfig = toml::from_str("max_in_flight = 3").unwrap();
        assert_eq!(plain, ConcurrencyLimitConfig::new(3));
        assert_eq!(
            format!("{:?}", plain.apply(ConcurrencyLimitLayer::builder(3))),
            format!("{:?}", ConcurrencyLimitLayer::builder(3))
        );
        // Required, unknown, invalid.
        assert!(toml::from_str::<ConcurrencyLimitConfig>("wait = true").is_err());
        assert!(toml::from_str::<ConcurrencyLimitConfig>("max_in_flight = 1\nqueue = 2").is_err());
        for (text, path) in [
            ("max_in_flight = 0", "max_in_flight"),
            ("max_in_flight = 1\nmax_wait = \"0s\"", "max_wait"),
            ("max_in_flight = 1\nmax_keys = 0", "max_keys"),
        ] {
            let c: ConcurrencyLimitConfig = toml::from_str(text).unwrap();
            assert_eq!(c.build().unwrap_err().path(), path, "{text}");
        }
    }
}
