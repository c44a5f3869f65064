//! Saga ids and stable step keys.
//!
//! A [`StepKey`] is deterministic per (saga id, step name, phase): a UUID version 5 over the
//! triple in the [`STEP_KEY_NAMESPACE`]. Every attempt of a step, in every process that ever
//! runs it, carries the same key, so a participant that deduplicates by key (send it as
//! `Idempotency-Key`) applies each effect exactly once.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use steadfast_layers::rng::RandomSource;
use uuid::Uuid;

/// The UUID namespace of step keys: UUID v5 of `steadfast-saga/step-key` in the URL namespace
/// (`ebea0808-e908-548f-99ce-3ec723b4d855`). Changing it would change every key: it is part of
/// the on-disk contract.
///
/// ```
/// assert_eq!(steadfast_saga::keys::STEP_KEY_NAMESPACE.get_version_num(), 5);
/// ```
pub const STEP_KEY_NAMESPACE: Uuid = Uuid::from_u128(0xebea_0808_e908_548f_99ce_3ec7_23b4_d855);

/// A saga's id: a UUID, random (from `steadfast_layers::rng`) when the saga is created.
///
/// ```
/// use steadfast_saga::SagaId;
/// use steadfast_layers::rng::SeededRng;
/// let a = SagaId::random(&SeededRng::new(1));
/// let b: SagaId = a.to_string().parse().unwrap();
/// assert_eq!(a, b);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SagaId(Uuid);

impl SagaId {
    /// The all-zero id (never used for a real saga).
    ///
    /// ```
    /// assert!(steadfast_saga::SagaId::nil().as_uuid().is_nil());
    /// ```
    pub const fn nil() -> Self {
        SagaId(Uuid::nil())
    }

    /// Wraps a UUID.
    ///
    /// ```
    /// let id = steadfast_saga::SagaId::from_uuid(uuid::Uuid::from_u128(7));
    /// assert_eq!(id.as_uuid().as_u128(), 7);
    /// ```
    pub const fn from_uuid(u: Uuid) -> Self {
        SagaId(u)
    }

    /// A random (version 4 layout) id drawn from `rng`.
    ///
    /// ```
    /// # use steadfast_layers::rng::SeededRng;
    /// let id = steadfast_saga::SagaId::random(&SeededRng::new(3));
    /// assert_eq!(id.as_uuid().get_version_num(), 4);
    /// ```
    pub fn random(rng: &dyn RandomSource) -> Self {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&rng.next_u64().to_le_bytes());
        SagaId(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }

    /// The UUID.
    ///
    /// ```
    /// assert!(steadfast_saga::SagaId::nil().as_uuid().is_nil());
    /// ```
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for SagaId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(SagaId)
    }
}

/// Which side of a step a key (or a log record) belongs to.
///
/// ```
/// use steadfast_saga::Phase;
/// assert_eq!(Phase::Compensation.as_str(), "compensation");
/// assert_eq!("forward".parse::<Phase>(), Ok(Phase::Forward));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The step's action.
    Forward,
    /// The step's compensation.
    Compensation,
}

impl Phase {
    /// The stored label.
    ///
    /// ```
    /// assert_eq!(steadfast_saga::Phase::Forward.as_str(), "forward");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Forward => "forward",
            Phase::Compensation => "compensation",
        }
    }
}

impl FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "forward" => Ok(Phase::Forward),
            "compensation" => Ok(Phase::Compensation),
            other => Err(format!("unknown phase {other:?}")),
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The stable key of one step phase of one saga, handed to the action: send it to the
/// participant as `Idempotency-Key` so that retries and re-invocations after a crash are
/// deduplicated.
///
/// ```
/// use steadfast_saga::{keys::StepKey, Phase, SagaId};
/// let saga = SagaId::from_uuid(uuid::Uuid::from_u128(1));
/// let a = StepKey::new(saga, "reserve-flight", Phase::Forward);
/// assert_eq!(a, StepKey::new(saga, "reserve-flight", Phase::Forward));
/// assert_ne!(a, StepKey::new(saga, "reserve-flight", Phase::Compensation));
/// assert_eq!(a.as_uuid().get_version_num(), 5);
/// assert_eq!(a.header_value(), format!("\"{a}\""));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepKey(Uuid);

impl StepKey {
    /// The key of `(saga, step, phase)`: UUID v5 of `"<saga uuid>\0<step>\0<phase>"`.
    ///
    /// ```
    /// # use steadfast_saga::{keys::StepKey, Phase, SagaId};
    /// let k = StepKey::new(SagaId::nil(), "s", Phase::Forward);
    /// assert_eq!(k.to_string().len(), 36);
    /// ```
    pub fn new(saga: SagaId, step: &str, phase: Phase) -> Self {
        let mut name = Vec::with_capacity(16 + 2 + step.len() + 12);
        name.extend_from_slice(saga.0.as_bytes());
        name.push(0);
        name.extend_from_slice(step.as_bytes());
        name.push(0);
        name.extend_from_slice(phase.as_str().as_bytes());
        StepKey(Uuid::new_v5(&STEP_KEY_NAMESPACE, &name))
    }

    /// The UUID.
    ///
    /// ```
    /// # use steadfast_saga::{keys::StepKey, Phase, SagaId};
    /// assert!(!StepKey::new(SagaId::nil(), "s", Phase::Forward).as_uuid().is_nil());
    /// ```
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The key as an `Idempotency-Key` header value: a quoted Structured Field string, as the
    /// IETF draft requires.
    ///
    /// ```
    /// # use steadfast_saga::{keys::StepKey, Phase, SagaId};
    /// let v = StepKey::new(SagaId::nil(), "s", Phase::Forward).header_value();
    /// assert!(v.starts_with('"') && v.ends_with('"'));
    /// ```
    pub fn header_value(&self) -> String {
        format!("\"{}\"", self.0.hyphenated())
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_is_derived_as_documented() {
        assert_eq!(
            Uuid::new_v5(&Uuid::NAMESPACE_URL, b"steadfast-saga/step-key"),
            STEP_KEY_NAMESPACE
        );
    }

    #[test]
    fn namespace_is_a_v5_uuid() {
        // Fixed forever: keys already handed to participants must not change.
        assert_eq!(STEP_KEY_NAMESPACE.get_version_num(), 5);
        let k = StepKey::new(SagaId(Uuid::from_u128(42)), "charge", Phase::Forward);
        assert_eq!(
            k,
            StepKey::new(SagaId(Uuid::from_u128(42)), "charge", Phase::Forward)
        );
    }

    #[test]
    fn keys_differ_per_component() {
        let s1 = SagaId(Uuid::from_u128(1));
        let s2 = SagaId(Uuid::from_u128(2));
        let a = StepKey::new(s1, "a", Phase::Forward);
        assert_ne!(a, StepKey::new(s2, "a", Phase::Forward));
        assert_ne!(a, StepKey::new(s1, "b", Phase::Forward));
        assert_ne!(a, StepKey::new(s1, "a", Phase::Compensation));
        // No ambiguity between step names and the separator.
        assert_ne!(
            StepKey::new(s1, "a\0forward", Phase::Forward),
            StepKey::new(s1, "a", Phase::Forward)
        );
    }
}
