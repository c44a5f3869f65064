use std::fmt;
use std::marker::PhantomData;

use tower_layer::Layer;

use super::LoadShed;
use crate::error::ConfigError;
use crate::error_type::{Boxed, Typed};
use crate::telemetry::{CallCounts, DefaultShared, SharedRef, Telemetry};

/// Sheds calls made while the inner service is not ready.
///
/// ```
/// use steadfast_layers::{shed::LoadShedLayer, telemetry::Telemetry};
/// let layer = LoadShedLayer::builder().telemetry(Telemetry::new().name("search")).build()?;
/// # let _ = layer;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
pub struct LoadShedLayer<K = Boxed> {
    shared: SharedRef<Shared>,
    _error: PhantomData<fn() -> K>,
}

impl<K> Clone for LoadShedLayer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            _error: PhantomData,
        }
    }
}

impl<K> fmt::Debug for LoadShedLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadShedLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

/// The layer's telemetry: its calls, and the calls it shed (`refused`).
pub(super) type Shared = CallCounts;

impl LoadShedLayer {
    /// A load-shedding layer with default telemetry.
    ///
    /// ```
    /// # use steadfast_layers::shed::LoadShedLayer;
    /// let layer = LoadShedLayer::new();
    /// # let _ = layer;
    /// ```
    pub fn new() -> Self {
        Self::with(Telemetry::default())
    }

    /// A builder (the only setting is telemetry).
    ///
    /// ```
    /// # use steadfast_layers::shed::LoadShedLayer;
    /// assert!(LoadShedLayer::builder().build().is_ok());
    /// ```
    pub fn builder() -> LoadShedLayerBuilder {
        LoadShedLayerBuilder {
            telemetry: Telemetry::default(),
        }
    }

    fn with(telemetry: Telemetry) -> Self {
        /// The state of every layer built with default telemetry: a service's clone (one per
        /// call under a retry) then copies a reference, not an `Arc` (ADR 0008, decision 23).
        static DEFAULT: DefaultShared<Shared> = DefaultShared::new();
        Self {
            shared: SharedRef::new(telemetry, &DEFAULT, |telemetry| {
                CallCounts::build(
                    telemetry,
                    (
                        "steadfast.shed.calls",
                        "Calls made through the load-shedding layer, shed ones included",
                    ),
                    (
                        "steadfast.shed.rejected",
                        "Calls shed because the inner service was not ready",
                    ),
                )
            }),
            _error: PhantomData,
        }
    }
}

impl<K> LoadShedLayer<K> {
    /// The same layer (sharing its telemetry), whose services fail with `E` instead of
    /// [`BoxError`](crate::BoxError): a shed call's error is made into `E` with
    /// `From<Overloaded>` and an inner error with `Into<E>`
    /// ([`Typed<E>`](crate::error_type::Typed); see [`error_type`](crate::error_type)). With a
    /// type that holds the refusal inline (an enum), shedding a call allocates nothing; with
    /// [`BoxError`](crate::BoxError), the default, each shed call boxes its
    /// [`Overloaded`](super::Overloaded) (one allocation).
    ///
    /// ```
    /// use std::task::{Context, Poll};
    /// use steadfast_layers::shed::{LoadShedLayer, OverloadReason, Overloaded};
    /// use tower::{Layer, Service, ServiceExt};
    ///
    /// #[derive(Debug)]
    /// enum CallError {
    ///     Overloaded(Overloaded),
    ///     Io(std::io::Error),
    /// }
    /// impl From<Overloaded> for CallError {
    ///     fn from(e: Overloaded) -> Self { CallError::Overloaded(e) }
    /// }
    /// impl From<std::io::Error> for CallError {
    ///     fn from(e: std::io::Error) -> Self { CallError::Io(e) }
    /// }
    ///
    /// /// A service that is never ready.
    /// struct Busy;
    /// impl Service<()> for Busy {
    ///     type Response = ();
    ///     type Error = std::io::Error;
    ///     type Future = std::future::Ready<Result<(), Self::Error>>;
    ///     fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> { Poll::Pending }
    ///     fn call(&mut self, _: ()) -> Self::Future { unreachable!("never ready") }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let svc = LoadShedLayer::new().with_error::<CallError>().layer(Busy);
    /// match svc.oneshot(()).await {
    ///     Err(CallError::Overloaded(e)) => assert_eq!(e.reason(), OverloadReason::NotReady),
    ///     other => panic!("expected a shed call, got {other:?}"),
    /// }
    /// # }
    /// ```
    pub fn with_error<E>(self) -> LoadShedLayer<Typed<E>> {
        LoadShedLayer {
            shared: self.shared,
            _error: PhantomData,
        }
    }
}

impl Default for LoadShedLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, K> Layer<S> for LoadShedLayer<K> {
    type Service = LoadShed<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        LoadShed {
            inner,
            ready: false,
            shared: self.shared.clone(),
            _error: PhantomData,
        }
    }
}

/// Builds a [`LoadShedLayer`].
///
/// ```
/// # use steadfast_layers::{shed::LoadShedLayer, telemetry::Telemetry};
/// let l = LoadShedLayer::builder().telemetry(Telemetry::new()).build()?;
/// # let _ = l;
/// # Ok::<(), steadfast_layers::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LoadShedLayerBuilder {
    telemetry: Telemetry,
}

impl LoadShedLayerBuilder {
    /// Where and how to record telemetry.
    ///
    /// ```
    /// # use steadfast_layers::{shed::LoadShedLayer, telemetry::Telemetry};
    /// let l = LoadShedLayer::builder().telemetry(Telemetry::new().name("x")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_layers::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Builds the layer (there is nothing that can be misconfigured yet; the `Result` keeps
    /// the signature of every other builder).
    ///
    /// ```
    /// # use steadfast_layers::shed::LoadShedLayer;
    /// assert!(LoadShedLayer::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<LoadShedLayer, ConfigError> {
        Ok(LoadShedLayer::with(self.telemetry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Default telemetry: every layer shares one process-wide state, so a service's clone (one
    /// per call under a retry) copies a reference and counts nothing; named telemetry: a state
    /// of the layer's own, shared by its services.
    #[test]
    fn default_telemetry_shares_one_static_state_and_named_telemetry_its_own() {
        let (a, b) = (LoadShedLayer::new(), LoadShedLayer::default());
        let (SharedRef::Static(a), SharedRef::Static(b)) = (&a.shared, &b.shared) else {
            panic!("default telemetry should give the process-wide state");
        };
        assert!(std::ptr::eq(*a, *b));

        let named = LoadShedLayer::builder()
            .telemetry(Telemetry::new().name("search"))
            .build()
            .unwrap();
        let svc = named.layer(());
        let SharedRef::Owned(own) = &named.shared else {
            panic!("named telemetry should give a state of the layer's own");
        };
        assert!(!std::ptr::eq(&**own, *a));
        assert_eq!(own.attrs.base().len(), 1);
        let SharedRef::Owned(of_service) = &svc.clone().shared else {
            panic!("a service shares its layer's state");
        };
        assert!(std::sync::Arc::ptr_eq(own, of_service));
    }
}
