//! The retry layer's settings as a configuration file writes them (feature `serde`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use super::backoff::{DEFAULT_BASE, DEFAULT_CAP};
use super::{Backoff, Jitter, RatioBudget, RetryLayer, RetryLayerBuilder};
use crate::error::ConfigError;

/// A [`RetryLayer`]'s settings, from JSON, TOML or YAML: every field optional, an absent one
/// keeping the builder's default ([`RetryLayer::builder`]). [`build`](Self::build) hands them
/// to the builder, which validates them; its errors name the field
/// (`max_attempts`, `backoff.cap`, `budget.ratio`).
///
/// ```toml
/// max_attempts = 4                 # first attempt included; default 3
/// min_attempt_time = "5ms"         # default 1 ms
/// backoff = { base = "50ms", cap = "2s", multiplier = 2.0, jitter = "full" }
/// budget = { ratio = 0.1, min_retries_per_sec = 5, ttl = "10s" }   # or "off", or a shared name
/// ```
///
/// ```
/// use steadfast_layers::retry::RetryConfig;
/// let config: RetryConfig = serde_json::from_str(r#"{ "max_attempts": 4, "backoff": { "constant": "100ms" } }"#)?;
/// let layer = config.build()?;
/// assert_eq!(layer.max_attempts(), 4);
/// assert!(layer.budget().is_some()); // the default budget
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts per call, first included, in `[1, 100]` (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The delay before each retry (default: exponential, 25 ms to 250 ms, full jitter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffConfig>,
    /// The least deadline a retry needs after its backoff (default 1 ms).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub min_attempt_time: Option<Duration>,
    /// The retry budget (default: Finagle's, 20 % of requests plus 10 retries a second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetConfig>,
    /// A seed for the jitter, to replay the same delays (default: from entropy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

/// How long to wait before each retry: `{ constant = "100ms" }`, or exponential
/// `{ base = "25ms", cap = "250ms", multiplier = 2.0 }`, each with an optional `jitter`
/// (`"none"`, `"full"`, `"equal"`, `"decorrelated"` or `{ proportional = 0.2 }`; default
/// full for exponential, none for constant). Absent parts keep [`Backoff::default`]'s
/// (25 ms, 250 ms, 2).
///
/// ```
/// use steadfast_layers::retry::BackoffConfig;
/// let b: BackoffConfig = serde_json::from_str(r#"{ "base": "10ms", "cap": "1s", "jitter": "equal" }"#)?;
/// assert!(b.to_backoff()?.validate().is_ok());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BackoffConfig {
    /// The same delay before every retry (excludes `base`, `cap` and `multiplier`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub constant: Option<Duration>,
    /// The first delay of an exponential backoff (default 25 ms).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub base: Option<Duration>,
    /// The longest delay of an exponential backoff (default 250 ms).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cap: Option<Duration>,
    /// The growth factor of an exponential backoff, in `[1, 100]` (default 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
    /// How the delay is randomised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<JitterConfig>,
}

/// A [`Jitter`], as a file writes it: `"none"`, `"full"`, `"equal"`, `"decorrelated"`, or
/// `{ proportional = 0.2 }`.
///
/// ```
/// use steadfast_layers::retry::{Jitter, JitterConfig};
/// let j: JitterConfig = serde_json::from_str(r#""decorrelated""#)?;
/// assert_eq!(Jitter::from(j), Jitter::Decorrelated);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum JitterConfig {
    /// [`Jitter::None`].
    None,
    /// [`Jitter::Full`].
    Full,
    /// [`Jitter::Equal`].
    Equal,
    /// [`Jitter::Decorrelated`].
    Decorrelated,
    /// [`Jitter::Proportional`].
    Proportional(f64),
}

impl From<JitterConfig> for Jitter {
    fn from(j: JitterConfig) -> Self {
        match j {
            JitterConfig::None => Jitter::None,
            JitterConfig::Full => Jitter::Full,
            JitterConfig::Equal => Jitter::Equal,
            JitterConfig::Decorrelated => Jitter::Decorrelated,
            JitterConfig::Proportional(r) => Jitter::Proportional(r),
        }
    }
}

/// The retry budget: `"off"` (no budget), a table for a [`RatioBudget`] of this layer's own,
/// or the name of a budget shared with other policies (resolved by
/// [`RetryConfig::apply_with`], as a policy set does).
///
/// ```
/// use steadfast_layers::retry::BudgetConfig;
/// let b: BudgetConfig = serde_json::from_str(r#""shared""#)?;
/// assert_eq!(b, BudgetConfig::Named("shared".into()));
/// let b: BudgetConfig = serde_json::from_str(r#""off""#)?;
/// assert_eq!(b, BudgetConfig::Off);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BudgetConfig {
    /// No budget: only the attempts and the deadline limit retries.
    Off,
    /// A budget shared by name.
    Named(String),
    /// A budget of this layer's own.
    Ratio(RatioBudgetConfig),
}

/// A [`RatioBudget`]'s settings (Finagle's `RetryBudget`): every field optional, an absent one
/// keeping [`RatioBudget::builder`]'s default.
///
/// ```
/// use steadfast_layers::retry::RatioBudgetConfig;
/// let c: RatioBudgetConfig = serde_json::from_str(r#"{ "ratio": 0.05, "ttl": "5s" }"#)?;
/// assert_eq!(c.build()?.ratio(), 0.05);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct RatioBudgetConfig {
    /// The share of requests that may be retried, as a fraction in `[0, 10]` (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Retries per second always allowed (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_retries_per_sec: Option<u32>,
    /// How long a deposit counts, in `[1 s, 60 s]` (default 10 s).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
}

impl RatioBudgetConfig {
    /// Builds the budget with [`RatioBudget::builder`], which validates it.
    ///
    /// ```
    /// # use steadfast_layers::retry::RatioBudgetConfig;
    /// let c: RatioBudgetConfig = serde_json::from_str(r#"{ "ttl": "2m" }"#)?;
    /// assert_eq!(c.build().unwrap_err().path(), "ttl");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<RatioBudget, ConfigError> {
        let mut b = RatioBudget::builder();
        if let Some(r) = self.ratio {
            b = b.ratio(r);
        }
        if let Some(n) = self.min_retries_per_sec {
            b = b.min_retries_per_sec(n);
        }
        if let Some(t) = self.ttl {
            b = b.ttl(t);
        }
        b.build()
    }
}

impl BackoffConfig {
    /// The [`Backoff`] this describes (validated by the retry layer's builder). A `constant`
    /// delay beside an exponential part is refused at `backoff.constant`.
    ///
    /// ```
    /// # use steadfast_layers::retry::BackoffConfig;
    /// let b: BackoffConfig = serde_json::from_str(r#"{ "constant": "1s", "cap": "2s" }"#)?;
    /// assert_eq!(b.to_backoff().unwrap_err().path(), "backoff.constant");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn to_backoff(&self) -> Result<Backoff, ConfigError> {
        let mut backoff = match self.constant {
            Some(d) => {
                if self.base.is_some() || self.cap.is_some() || self.multiplier.is_some() {
                    return Err(ConfigError::conflict(
                        "backoff.constant",
                        "a constant backoff has no base, cap or multiplier",
                    ));
                }
                Backoff::constant(d)
            }
            None => {
                let b = Backoff::exponential(
                    self.base.unwrap_or(DEFAULT_BASE),
                    self.cap.unwrap_or(DEFAULT_CAP),
                );
                match self.multiplier {
                    Some(m) => b.multiplier(m),
                    None => b,
                }
            }
        };
        if let Some(j) = self.jitter {
            backoff = backoff.jitter(j.into());
        }
        Ok(backoff)
    }
}

impl RetryConfig {
    /// Sets what this configuration says on `builder` (whatever its classifier and replay); a
    /// budget named here is an error, as there is no set of shared budgets to find it in (see
    /// [`apply_with`](Self::apply_with)).
    ///
    /// ```
    /// use steadfast_layers::retry::{RetryConfig, RetryLayer};
    /// let config: RetryConfig = serde_json::from_str(r#"{ "max_attempts": 2 }"#)?;
    /// let layer = config.apply(RetryLayer::builder().seed(1))?.build()?;
    /// assert_eq!(layer.max_attempts(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply<C, R>(
        &self,
        builder: RetryLayerBuilder<C, R>,
    ) -> Result<RetryLayerBuilder<C, R>, ConfigError> {
        self.apply_with(builder, &|_| None)
    }

    /// As [`apply`](Self::apply), finding a named budget with `shared` (the same `Arc` for
    /// every layer that names it); a name it does not know is an error at `budget`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use steadfast_layers::retry::{RatioBudget, RetryConfig, RetryLayer};
    /// let shared = Arc::new(RatioBudget::builder().ratio(0.1).build()?);
    /// let config: RetryConfig = serde_json::from_str(r#"{ "budget": "api" }"#)?;
    /// let find = |name: &str| (name == "api").then(|| shared.clone());
    /// let layer = config.apply_with(RetryLayer::builder(), &find)?.build()?;
    /// assert!(layer.budget().is_some());
    /// let other: RetryConfig = serde_json::from_str(r#"{ "budget": "nope" }"#)?;
    /// assert_eq!(other.apply_with(RetryLayer::builder(), &find).unwrap_err().path(), "budget");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn apply_with<C, R>(
        &self,
        mut builder: RetryLayerBuilder<C, R>,
        shared: &dyn Fn(&str) -> Option<Arc<RatioBudget>>,
    ) -> Result<RetryLayerBuilder<C, R>, ConfigError> {
        if let Some(n) = self.max_attempts {
            builder = builder.max_attempts(n);
        }
        if let Some(b) = &self.backoff {
            builder = builder.backoff(b.to_backoff()?);
        }
        if let Some(t) = self.min_attempt_time {
            builder = builder.min_attempt_time(t);
        }
        match &self.budget {
            None => {}
            Some(BudgetConfig::Off) => builder = builder.no_budget(),
            Some(BudgetConfig::Ratio(r)) => {
                builder = builder.budget(Arc::new(r.build().map_err(|e| e.at("budget"))?));
            }
            Some(BudgetConfig::Named(name)) => match shared(name) {
                Some(b) => builder = builder.budget(b),
                None => {
                    return Err(ConfigError::conflict(
                        "budget",
                        "names no budget of the policy set's `budgets`",
                    ))
                }
            },
        }
        if let Some(s) = self.seed {
            builder = builder.seed(s);
        }
        Ok(builder)
    }

    /// Builds the layer with [`RetryLayer::builder`], which validates the settings.
    ///
    /// ```
    /// # use steadfast_layers::retry::RetryConfig;
    /// let config: RetryConfig = serde_json::from_str(r#"{ "max_attempts": 0 }"#)?;
    /// assert_eq!(config.build().unwrap_err().path(), "max_attempts");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn build(&self) -> Result<RetryLayer, ConfigError> {
        self.apply(RetryLayer::builder())?.build()
    }
}

impl Serialize for BudgetConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BudgetConfig::Off => s.serialize_str("off"),
            BudgetConfig::Named(n) => s.serialize_str(n),
            BudgetConfig::Ratio(r) => r.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for BudgetConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BudgetConfig;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"off\", the name of a shared budget, or a table { ratio, min_retries_per_sec, ttl }")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BudgetConfig, E> {
                Ok(match v {
                    "off" => BudgetConfig::Off,
                    "" => return Err(E::custom("a budget name must not be empty")),
                    name => BudgetConfig::Named(name.to_owned()),
                })
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<BudgetConfig, E> {
                if v {
                    Err(E::custom(
                        "`budget = true` says nothing: write a table, a name or \"off\"",
                    ))
                } else {
                    Ok(BudgetConfig::Off)
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<BudgetConfig, A::Error> {
                RatioBudgetConfig::deserialize(MapAccessDeserializer::new(map))
                    .map(BudgetConfig::Ratio)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_util::round_trip;
    use crate::Problem;

    const TOML: &str = r#"
        max_attempts = 4
        min_attempt_time = "5ms"
        seed = 7
        backoff = { base = "50ms", cap = "2s", multiplier = 3.0, jitter = { proportional = 0.25 } }
        budget = { ratio = 0.1, min_retries_per_sec = 5, ttl = "20s" }
    "#;

    #[test]
    fn reads_toml_and_json_alike_and_round_trips() {
        let from_toml: RetryConfig = toml::from_str(TOML).unwrap();
        let json = r#"{ "max_attempts": 4, "min_attempt_time": "5ms", "seed": 7,
            "backoff": { "base": "50ms", "cap": "2s", "multiplier": 3.0, "jitter": { "proportional": 0.25 } },
            "budget": { "ratio": 0.1, "min_retries_per_sec": 5, "ttl": "20s" } }"#;
        let from_json: RetryConfig = serde_json::from_str(json).unwrap();
        assert_eq!(from_toml, from_json);
        assert_eq!(from_toml.max_attempts, Some(4));
        assert_eq!(
            from_toml.backoff.as_ref().unwrap().cap,
            Some(Duration::from_secs(2))
        );
        round_trip(&from_toml);
        for budget in [
            BudgetConfig::Off,
            BudgetConfig::Named("shared".into()),
            BudgetConfig::Ratio(RatioBudgetConfig::default()),
        ] {
            round_trip(&RetryConfig {
                budget: Some(budget),
                ..RetryConfig::default()
            });
        }
        let layer = from_toml.build().unwrap();
        assert_eq!(layer.max_attempts(), 4);
        assert!(layer.budget().is_some());
    }

    #[test]
    fn defaults_are_the_builders() {
        let config: RetryConfig = toml::from_str("").unwrap();
        assert_eq!(config, RetryConfig::default());
        let from_config = config.build().unwrap();
        let from_builder = RetryLayer::builder().build().unwrap();
        assert_eq!(from_config.max_attempts(), from_builder.max_attempts());
        assert_eq!(
            from_config.budget().map(|b| b.balance()),
            from_builder.budget().map(|b| b.balance())
        );
        let backoff: BackoffConfig = toml::from_str("").unwrap();
        assert_eq!(backoff.to_backoff().unwrap(), Backoff::default());
        assert_eq!(
            RatioBudgetConfig::default().build().unwrap().ratio(),
            RatioBudget::default().ratio()
        );
    }

    #[test]
    fn rejects_unknown_fields_and_invalid_values_with_their_path() {
        let err = toml::from_str::<RetryConfig>("max_atempts = 3").unwrap_err();
        assert!(err.to_string().contains("max_atempts"), "{err}");
        let err = toml::from_str::<RetryConfig>("backoff = { bse = \"1s\" }").unwrap_err();
        assert!(err.to_string().contains("bse"), "{err}");
        let err = toml::from_str::<RetryConfig>("min_attempt_time = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");

        let cases = [
            ("max_attempts = 0", "max_attempts"),
            ("max_attempts = 101", "max_attempts"),
            ("backoff = { base = \"1s\" }", "backoff.base"),
            ("backoff = { cap = \"2d\" }", "backoff.cap"),
            ("backoff = { multiplier = 0.5 }", "backoff.multiplier"),
            (
                "backoff = { constant = \"1s\", base = \"1s\" }",
                "backoff.constant",
            ),
            (
                "backoff = { jitter = { proportional = 2.0 } }",
                "backoff.jitter",
            ),
            ("budget = { ratio = -1.0 }", "budget.ratio"),
            ("budget = { ttl = \"0s\" }", "budget.ttl"),
            ("budget = \"payments\"", "budget"),
        ];
        for (text, path) in cases {
            let config: RetryConfig = toml::from_str(text).unwrap();
            let err = config.build().unwrap_err();
            assert_eq!(err.path(), path, "{text}: {err}");
        }
        let config: RetryConfig = toml::from_str("max_attempts = 0").unwrap();
        assert_eq!(config.build().unwrap_err().problem(), &Problem::Zero);
    }

    #[test]
    fn a_named_budget_is_the_shared_arc() {
        let shared = Arc::new(RatioBudget::builder().ratio(0.5).build().unwrap());
        let config: RetryConfig = toml::from_str("budget = \"api\"").unwrap();
        let find = |n: &str| (n == "api").then(|| Arc::clone(&shared));
        let a = config
            .apply_with(RetryLayer::builder(), &find)
            .unwrap()
            .build()
            .unwrap();
        let b = config
            .apply_with(RetryLayer::builder(), &find)
            .unwrap()
            .build()
            .unwrap();
        let (a, b) = (a.budget().unwrap(), b.budget().unwrap());
        assert!(std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b)));
        assert!(std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(&shared)));
        let off: RetryConfig = toml::from_str("budget = \"off\"").unwrap();
        assert!(off.build().unwrap().budget().is_none());
        let off: RetryConfig = toml::from_str("budget = false").unwrap();
        assert!(off.build().unwrap().budget().is_none());
    }
}
