//! What error type a refusing layer's services fail with: [`BoxError`], tower's convention and
//! the default ([`Boxed`]), or a type of the caller's that holds the refusal inline
//! ([`Typed<E>`](Typed)), so that a refusal allocates nothing (ADR 0008).
//!
//! A layer that can refuse a call (the circuit breaker, through
//! [`CircuitBreakerLayer::with_error`](crate::breaker::CircuitBreakerLayer::with_error), and the
//! concurrency limit, load shedding, the bulkhead, the rate limit, the adaptive throttle, the
//! adaptive limit, the deadline and the attempt timeout, through their layers' `with_error`) has
//! a last type parameter `K = Boxed` naming one of these. [`MakeError`] turns the inner service's
//! error into the service's error; [`MakeRefusal`] turns the layer's own noun
//! ([`CircuitOpen`](crate::breaker::CircuitOpen), [`Overloaded`](crate::overload::Overloaded),
//! [`DeadlineExceeded`](crate::deadline::DeadlineExceeded), [`Elapsed`](crate::timeout::Elapsed))
//! into it.
//!
//! Stacking typed layers keeps the refusals unboxed all the way up (`Typed<E>` over an inner
//! error that is already `E`). A layer above that classifies errors sees `E`: the circuit
//! breaker's default classifier, [`RetryOnError`](crate::classify::RetryOnError), reads it
//! through [`AsErrorRef`](crate::classify::AsErrorRef), which `E` then implements (returning
//! each variant's error, so that the nouns are recognised), or the layer is given a classifier
//! of its own. The adaptive limit reads its own `E` the same way, whatever its classifier, to
//! count a [`DeadlineExceeded`](crate::deadline::DeadlineExceeded) after the call ran as a drop:
//! its `with_error::<E>()` services need `E: AsErrorRef`.
//!
//! ```
//! use steadfast_layers::breaker::CircuitOpen;
//! use steadfast_layers::error_type::{Boxed, MakeError, MakeRefusal, Typed};
//! use steadfast_layers::BoxError;
//!
//! #[derive(Debug)]
//! enum CallError { Open(CircuitOpen), Io(std::io::Error) }
//! impl From<CircuitOpen> for CallError { fn from(e: CircuitOpen) -> Self { CallError::Open(e) } }
//! impl From<std::io::Error> for CallError { fn from(e: std::io::Error) -> Self { CallError::Io(e) } }
//!
//! let open = CircuitOpen::new(steadfast_layers::breaker::BreakerState::ForcedOpen, None);
//! let boxed: BoxError = <Boxed as MakeRefusal<std::io::Error, CircuitOpen>>::refusal(open);
//! assert!(boxed.is::<CircuitOpen>());
//! let typed = <Typed<CallError> as MakeRefusal<std::io::Error, CircuitOpen>>::refusal(open);
//! assert!(matches!(typed, CallError::Open(_)));
//! let inner = <Typed<CallError> as MakeError<std::io::Error>>::inner(std::io::Error::other("x"));
//! assert!(matches!(inner, CallError::Io(_)));
//! ```

use std::fmt;
use std::marker::PhantomData;

use crate::BoxError;

/// Services fail with [`BoxError`]: the inner error by `Into<BoxError>`, a refusal boxed (one
/// allocation of the noun's size). The default.
///
/// ```
/// use steadfast_layers::error_type::{Boxed, MakeError};
/// let e = <Boxed as MakeError<std::io::Error>>::inner(std::io::Error::other("down"));
/// assert_eq!(e.to_string(), "down");
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Boxed;

/// Services fail with `E`: the inner error by `Into<E>`, a refusal by `From<Noun>` (no
/// allocation when `E` holds the noun inline, as an enum does).
///
/// ```
/// use steadfast_layers::error_type::{MakeError, Typed};
/// let e = <Typed<std::io::Error> as MakeError<std::io::Error>>::inner(std::io::Error::other("x"));
/// assert_eq!(e.kind(), std::io::ErrorKind::Other);
/// ```
pub struct Typed<E>(PhantomData<fn() -> E>);

impl<E> Clone for Typed<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for Typed<E> {}

impl<E> Default for Typed<E> {
    fn default() -> Self {
        Typed(PhantomData)
    }
}

impl<E> fmt::Debug for Typed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Typed<{}>", std::any::type_name::<E>())
    }
}

/// The error type of a service whose inner service fails with `Inner`.
///
/// ```
/// use steadfast_layers::error_type::{Boxed, MakeError};
/// fn error_of<K: MakeError<std::io::Error>>(e: std::io::Error) -> K::Error { K::inner(e) }
/// assert_eq!(error_of::<Boxed>(std::io::Error::other("x")).to_string(), "x");
/// ```
pub trait MakeError<Inner> {
    /// The service's error type.
    type Error;

    /// The inner service's error, as the service's.
    fn inner(e: Inner) -> Self::Error;
}

/// Makes the layer's own refusal `N` into the service's error type.
///
/// ```
/// use steadfast_layers::error_type::{Boxed, MakeRefusal};
/// use steadfast_layers::overload::{OverloadReason, Overloaded};
/// let e = <Boxed as MakeRefusal<std::io::Error, Overloaded>>::refusal(
///     Overloaded::new("limit", OverloadReason::AtCapacity),
/// );
/// assert!(e.is::<Overloaded>());
/// ```
pub trait MakeRefusal<Inner, N>: MakeError<Inner> {
    /// The refusal, as the service's error.
    fn refusal(n: N) -> Self::Error;
}

impl<Inner: Into<BoxError>> MakeError<Inner> for Boxed {
    type Error = BoxError;

    #[inline]
    fn inner(e: Inner) -> BoxError {
        e.into()
    }
}

impl<Inner, N> MakeRefusal<Inner, N> for Boxed
where
    Inner: Into<BoxError>,
    N: std::error::Error + Send + Sync + 'static,
{
    #[inline]
    fn refusal(n: N) -> BoxError {
        Box::new(n)
    }
}

impl<E, Inner: Into<E>> MakeError<Inner> for Typed<E> {
    type Error = E;

    #[inline]
    fn inner(e: Inner) -> E {
        e.into()
    }
}

impl<E, Inner, N> MakeRefusal<Inner, N> for Typed<E>
where
    Inner: Into<E>,
    N: Into<E>,
{
    #[inline]
    fn refusal(n: N) -> E {
        n.into()
    }
}
