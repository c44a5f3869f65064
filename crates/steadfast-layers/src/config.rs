//! What the configuration types of every layer share (feature `serde`): durations written as
//! `"250ms"` or `"2s"`, and settings written either as a duration or as a table of their parts.
//!
//! Each layer's configuration type lives in its folder (`retry/config.rs`, ...), and is
//! re-exported beside the layer (`retry::RetryConfig`). A configuration type holds what a file
//! says, every field optional but the few without a default; `build` hands it to the layer's
//! builder, which alone validates and alone knows the defaults.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::{self, value::MapAccessDeserializer, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// Parses a duration as humantime writes it: `"250ms"`, `"2s"`, `"1m 30s"`.
pub(crate) fn parse_duration<E: de::Error>(v: &str) -> Result<Duration, E> {
    humantime::parse_duration(v).map_err(|e| E::custom(format_args!("invalid duration {v:?}: {e}")))
}

/// Deserialises a setting written as a duration (`"30s"`, converted with `From<Duration>`) or as
/// a table of its parts (`{ base = "1s", cap = "1m" }`).
pub(crate) fn duration_or_table<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + From<Duration>,
{
    struct V<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de> + From<Duration>> Visitor<'de> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"250ms\", or a table")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
            parse_duration(v).map(T::from)
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map))
        }
    }
    d.deserialize_any(V(PhantomData)).map(Some)
}

#[cfg(test)]
pub(crate) mod test_util {
    //! Round trips through the formats, for the configuration tests.
    use serde::{de::DeserializeOwned, Serialize};

    /// Writes `value` as TOML and as JSON, reads both back, and checks that they are equal.
    pub(crate) fn round_trip<T>(value: &T)
    where
        T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let toml = toml::to_string(value).expect("serialises to TOML");
        let back: T = toml::from_str(&toml).expect("reads back from TOML");
        assert_eq!(&back, value, "TOML:\n{toml}");
        let json = serde_json::to_string(value).expect("serialises to JSON");
        let back: T = serde_json::from_str(&json).expect("reads back from JSON");
        assert_eq!(&back, value, "JSON: {json}");
    }
}
