//! The load shedder's settings as a configuration file writes them (feature `serde`).

use serde::{Deserialize, Serialize};

use super::LoadShedLayer;
use crate::error::ConfigError;

/// A [`LoadShedLayer`]'s settings, from JSON, TOML or YAML: none yet (an empty table, `{}`,
/// turns the layer on); unknown fields are refused, so that a file written for a later
/// version fails loudly rather than silently.
///
/// ```
/// use steadfast_layers::shed::LoadShedConfig;
/// let config: LoadShedConfig = serde_json::from_str("{}")?;
/// let layer = config.build()?;
/// # let _ = layer;
/// assert!(serde_json::from_str::<LoadShedConfig>(r#"{ "threshold": 1 }"#).is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct LoadShedConfig {}

impl LoadShedConfig {
    /// Builds the layer with [`LoadShedLayer::builder`].
    ///
    /// ```
    /// # use steadfast_layers::shed::LoadShedConfig;
    /// assert!(LoadShedConfig::default().build().is_ok());
    /// ```
    pub fn build(&self) -> Result<LoadShedLayer, ConfigError> {
        LoadShedLayer::builder().build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;

    #[test]
    fn reads_round_trips_and_refuses_fields() {
        let a: LoadShedConfig = toml::from_str("").unwrap();
        round_trip(&a);
        assert!(a.build().is_ok());
        assert!(toml::from_str::<LoadShedConfig>("max = 1").is_err());
    }
}
