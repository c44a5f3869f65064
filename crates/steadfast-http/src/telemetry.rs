//! The minimal meter setup this crate needs, duplicated from `steadfast_layers::telemetry`,
//! whose helpers are crate-private.
//!
//! Limitation: `Telemetry::resolve_meter` is private to steadfast-layers, so a meter injected
//! with `Telemetry::meter` cannot be read here; this crate records on the global provider's
//! `steadfast` meter (captured when a layer is built) and honours the instance name. Once
//! steadfast-layers exposes the meter, [`resolve_meter`] is the one place to change.

use std::sync::Arc;

use opentelemetry::metrics::Meter;
use opentelemetry::{KeyValue, StringValue, Value};
use steadfast_layers::telemetry::{Telemetry, NAME_KEY};

/// The meter to record on: the global provider's `steadfast` meter.
pub(crate) fn resolve_meter(_telemetry: &Telemetry) -> Meter {
    opentelemetry::global::meter("steadfast")
}

/// Precomputed attributes of one layer instance.
#[derive(Clone, Debug)]
pub(crate) struct Attrs {
    name: Option<KeyValue>,
}

impl Attrs {
    pub(crate) fn new(telemetry: &Telemetry) -> Self {
        Attrs {
            name: telemetry.instance_name().map(|n| {
                KeyValue::new(
                    NAME_KEY,
                    Value::String(StringValue::from(Arc::<str>::from(n))),
                )
            }),
        }
    }

    /// The instance-name attribute, if the layer is named.
    pub(crate) fn name(&self) -> Option<&KeyValue> {
        self.name.as_ref()
    }

    /// The base attributes plus `key = value`, passed to `f`.
    pub(crate) fn with<R>(
        &self,
        key: &'static str,
        value: &'static str,
        f: impl FnOnce(&[KeyValue]) -> R,
    ) -> R {
        let extra = KeyValue::new(key, value);
        match &self.name {
            Some(name) => f(&[name.clone(), extra]),
            None => f(&[extra]),
        }
    }
}

/// The instance name for span and event fields ("" when unnamed).
pub(crate) fn instance(telemetry: &Telemetry) -> &str {
    telemetry.instance_name().unwrap_or("")
}

/// Milliseconds of a duration as a float, for event fields.
pub(crate) fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
