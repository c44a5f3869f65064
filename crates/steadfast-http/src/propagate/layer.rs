use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::HeaderMap;
use opentelemetry::metrics::Counter;
use steadfast_layers::deadline::MAX_TIMEOUT;
use steadfast_layers::telemetry::{Attrs, Telemetry, REASON_KEY};
use tower_layer::Layer;

use super::{DeadlinePropagation, DeadlineServer};
use crate::codec::{decode_grpc_timeout, decode_timeout_ms, GRPC_TIMEOUT, REQUEST_TIMEOUT_MS};
use crate::error::ConfigError;

/// The default safety margin a client shaves off the deadline at each hop: 10 ms.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(10);

fn exceeded_counter(telemetry: &Telemetry) -> Counter<u64> {
    telemetry
        .resolve_meter()
        .u64_counter("steadfast.deadline.exceeded")
        .with_description("Calls that ran out of end-to-end deadline, by stage")
        .build()
}

fn check_header(header: &HeaderName) -> Result<(), ConfigError> {
    if *header == GRPC_TIMEOUT {
        return Err(ConfigError::conflict(
            "header",
            "grpc-timeout is always read and written for gRPC; choose another header for plain HTTP",
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------------

/// Server side of deadline propagation: reads the caller's deadline from the request, puts it on
/// the request and in scope for the handler, and answers for the handler when it is already
/// spent (or, by default, when it runs out).
///
/// Built by [`DeadlineServerLayer::builder`]; [`DeadlineServerLayer::new`] has the defaults. See
/// the [module docs](super) for the protocol.
///
/// Its answers are responses and its error type is the inner service's, so it goes straight
/// onto an axum `Router` (`.layer(DeadlineServerLayer::new())`, no `HandleErrorLayer`) or a
/// tonic `Server::builder().layer(..)`.
///
/// ```
/// use steadfast_http::propagate::DeadlineServerLayer;
/// use steadfast_layers::telemetry::Telemetry;
/// let layer = DeadlineServerLayer::builder()
///     .header(http::HeaderName::from_static("x-deadline-ms"))
///     .telemetry(Telemetry::new().name("api"))
///     .build()?;
/// assert_eq!(layer.header(), "x-deadline-ms");
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DeadlineServerLayer {
    pub(super) shared: Arc<ServerShared>,
}

#[derive(Debug)]
pub(super) struct ServerShared {
    pub(super) header: HeaderName,
    pub(super) enforce: bool,
    pub(super) exceeded: Counter<u64>,
    pub(super) invalid: Counter<u64>,
    pub(super) attrs: Attrs,
    pub(super) telemetry: Telemetry,
}

impl ServerShared {
    /// The earlier of the timeouts the request carries, ignoring (and reporting) malformed ones.
    pub(super) fn wire_timeout(&self, headers: &HeaderMap, grpc: bool) -> Option<Duration> {
        let mut timeout: Option<Duration> = None;
        let mut take = |t: Duration| timeout = Some(timeout.map_or(t, |old| old.min(t)));
        if grpc {
            if let Some(v) = headers.get(GRPC_TIMEOUT) {
                match decode_grpc_timeout(v) {
                    Ok(t) => take(t),
                    Err(e) => self.report_invalid(&e),
                }
            }
        }
        if let Some(v) = headers.get(&self.header) {
            match decode_timeout_ms(v) {
                Ok(t) => take(t),
                Err(e) => self.report_invalid(&e),
            }
        }
        timeout
    }

    fn report_invalid(&self, e: &crate::codec::InvalidHeader) {
        self.attrs
            .with("header", e.header(), |a| self.invalid.add(1, a));
        tracing::debug!(
            target: "steadfast::propagate",
            instance = self.telemetry.instance_name(),
            header = e.header(),
            error = %e,
            "malformed deadline header ignored"
        );
    }

    pub(super) fn count_exceeded(&self, reason: &'static str) {
        self.attrs
            .with(REASON_KEY, reason, |a| self.exceeded.add(1, a));
    }
}

impl Default for DeadlineServerLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl DeadlineServerLayer {
    /// The defaults: reads `grpc-timeout` (gRPC requests) and `x-request-timeout-ms` (any
    /// request), enforces the deadline, default telemetry.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// assert_eq!(DeadlineServerLayer::new().header(), "x-request-timeout-ms");
    /// ```
    pub fn new() -> Self {
        let telemetry = Telemetry::default();
        Self::from_parts(REQUEST_TIMEOUT_MS, true, telemetry)
    }

    /// A builder with the defaults of [`DeadlineServerLayer::new`].
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// let layer = DeadlineServerLayer::builder().enforce(false).build()?;
    /// assert!(!layer.enforces());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn builder() -> DeadlineServerLayerBuilder {
        DeadlineServerLayerBuilder {
            header: REQUEST_TIMEOUT_MS,
            enforce: true,
            telemetry: Telemetry::default(),
        }
    }

    fn from_parts(header: HeaderName, enforce: bool, telemetry: Telemetry) -> Self {
        let meter = telemetry.resolve_meter();
        DeadlineServerLayer {
            shared: Arc::new(ServerShared {
                header,
                enforce,
                exceeded: exceeded_counter(&telemetry),
                invalid: meter
                    .u64_counter("steadfast.deadline.invalid_header")
                    .with_description("Incoming deadline headers ignored because malformed")
                    .build(),
                attrs: telemetry.base_attributes(),
                telemetry,
            }),
        }
    }

    /// The plain-HTTP header read (besides `grpc-timeout`).
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// assert_eq!(DeadlineServerLayer::new().header(), steadfast_http::codec::REQUEST_TIMEOUT_MS);
    /// ```
    pub fn header(&self) -> &HeaderName {
        &self.shared.header
    }

    /// Whether the handler is cut off when the deadline passes.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// assert!(DeadlineServerLayer::new().enforces());
    /// ```
    pub fn enforces(&self) -> bool {
        self.shared.enforce
    }
}

impl<S> Layer<S> for DeadlineServerLayer {
    type Service = DeadlineServer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineServer {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`DeadlineServerLayer`], validating its configuration.
///
/// ```
/// # use steadfast_http::propagate::DeadlineServerLayer;
/// let err = DeadlineServerLayer::builder().header(steadfast_http::codec::GRPC_TIMEOUT).build().unwrap_err();
/// assert_eq!(err.field(), "header");
/// ```
#[derive(Clone, Debug)]
pub struct DeadlineServerLayerBuilder {
    header: HeaderName,
    enforce: bool,
    telemetry: Telemetry,
}

impl DeadlineServerLayerBuilder {
    /// The header carrying a plain HTTP request's timeout in whole milliseconds (default
    /// [`REQUEST_TIMEOUT_MS`]). It is read on gRPC requests too; the earlier deadline wins.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// let l = DeadlineServerLayer::builder()
    ///     .header(http::HeaderName::from_static("x-envoy-expected-rq-timeout-ms"))
    ///     .build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Whether to cut the handler off when the deadline passes (default `true`): its future is
    /// dropped and the layer answers `504` (gRPC: `DEADLINE_EXCEEDED`). With `false` the
    /// deadline is only read, set and scoped, and requests already expired are still rejected.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// let l = DeadlineServerLayer::builder().enforce(false).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn enforce(mut self, yes: bool) -> Self {
        self.enforce = yes;
        self
    }

    /// Where and how to record telemetry: the meter (given with [`Telemetry::meter`], else the
    /// global provider's `steadfast` meter, captured when the layer is built) and the instance
    /// name (the `steadfast.name` attribute on metrics, the `instance` field on spans and
    /// events).
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let l = DeadlineServerLayer::builder().telemetry(Telemetry::new().name("edge")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Validates and builds the layer: the header must not be `grpc-timeout`.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// assert!(DeadlineServerLayer::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<DeadlineServerLayer, ConfigError> {
        check_header(&self.header)?;
        Ok(DeadlineServerLayer::from_parts(
            self.header,
            self.enforce,
            self.telemetry,
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------------

/// Client side of deadline propagation: writes what is left of the caller's deadline, minus a
/// safety margin, into each outgoing request (`grpc-timeout` for gRPC, a header for plain HTTP),
/// and fails fast with [`DeadlineExceeded`](steadfast_layers::deadline::DeadlineExceeded) when
/// nothing is left.
///
/// Built by [`DeadlinePropagationLayer::builder`]; [`DeadlinePropagationLayer::new`] has the
/// defaults. See the [module docs](super).
///
/// ```
/// use std::time::Duration;
/// use steadfast_http::propagate::DeadlinePropagationLayer;
/// let layer = DeadlinePropagationLayer::builder()
///     .margin(Duration::from_millis(50))
///     .max_timeout(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(layer.margin(), Duration::from_millis(50));
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct DeadlinePropagationLayer {
    pub(super) shared: Arc<ClientShared>,
}

#[derive(Debug)]
pub(super) struct ClientShared {
    pub(super) header: HeaderName,
    pub(super) margin: Duration,
    pub(super) max_timeout: Option<Duration>,
    pub(super) exceeded: Counter<u64>,
    pub(super) attrs: Attrs,
    pub(super) telemetry: Telemetry,
}

impl ClientShared {
    pub(super) fn count_exceeded(&self) {
        self.attrs
            .with(REASON_KEY, "propagate", |a| self.exceeded.add(1, a));
    }
}

impl Default for DeadlinePropagationLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl DeadlinePropagationLayer {
    /// The defaults: writes `grpc-timeout` (gRPC) or `x-request-timeout-ms` (plain HTTP), shaves
    /// [`DEFAULT_MARGIN`] (10 ms), no cap.
    ///
    /// ```
    /// # use steadfast_http::propagate::{DeadlinePropagationLayer, DEFAULT_MARGIN};
    /// assert_eq!(DeadlinePropagationLayer::new().margin(), DEFAULT_MARGIN);
    /// ```
    pub fn new() -> Self {
        Self::from_parts(
            REQUEST_TIMEOUT_MS,
            DEFAULT_MARGIN,
            None,
            Telemetry::default(),
        )
    }

    /// A builder with the defaults of [`DeadlinePropagationLayer::new`].
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// assert!(DeadlinePropagationLayer::builder().build().is_ok());
    /// ```
    pub fn builder() -> DeadlinePropagationLayerBuilder {
        DeadlinePropagationLayerBuilder {
            header: REQUEST_TIMEOUT_MS,
            margin: DEFAULT_MARGIN,
            max_timeout: None,
            telemetry: Telemetry::default(),
        }
    }

    fn from_parts(
        header: HeaderName,
        margin: Duration,
        max_timeout: Option<Duration>,
        telemetry: Telemetry,
    ) -> Self {
        DeadlinePropagationLayer {
            shared: Arc::new(ClientShared {
                header,
                margin,
                max_timeout,
                exceeded: exceeded_counter(&telemetry),
                attrs: telemetry.base_attributes(),
                telemetry,
            }),
        }
    }

    /// The margin shaved off at this hop.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// let l = DeadlinePropagationLayer::builder().margin(Duration::ZERO).build()?;
    /// assert_eq!(l.margin(), Duration::ZERO);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn margin(&self) -> Duration {
        self.shared.margin
    }

    /// The cap on the propagated timeout, if any.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// assert_eq!(DeadlinePropagationLayer::new().max_timeout(), None);
    /// ```
    pub fn max_timeout(&self) -> Option<Duration> {
        self.shared.max_timeout
    }

    /// The plain-HTTP header written.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// assert_eq!(DeadlinePropagationLayer::new().header(), "x-request-timeout-ms");
    /// ```
    pub fn header(&self) -> &HeaderName {
        &self.shared.header
    }
}

impl<S> Layer<S> for DeadlinePropagationLayer {
    type Service = DeadlinePropagation<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlinePropagation {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Builds a [`DeadlinePropagationLayer`], validating its configuration.
///
/// ```
/// # use std::time::Duration;
/// # use steadfast_http::propagate::DeadlinePropagationLayer;
/// let err = DeadlinePropagationLayer::builder().margin(Duration::MAX).build().unwrap_err();
/// assert_eq!(err.field(), "margin");
/// ```
#[derive(Clone, Debug)]
pub struct DeadlinePropagationLayerBuilder {
    header: HeaderName,
    margin: Duration,
    max_timeout: Option<Duration>,
    telemetry: Telemetry,
}

impl DeadlinePropagationLayerBuilder {
    /// The header written on plain HTTP requests, in whole milliseconds (default
    /// [`REQUEST_TIMEOUT_MS`]). gRPC requests always get `grpc-timeout` instead.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// let l = DeadlinePropagationLayer::builder()
    ///     .header(http::HeaderName::from_static("x-deadline-ms"))
    ///     .build()?;
    /// assert_eq!(l.header(), "x-deadline-ms");
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn header(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Time shaved off the remaining deadline at this hop (default [`DEFAULT_MARGIN`], at most
    /// [`MAX_TIMEOUT`]): the time the answer needs to travel back, so that the callee gives up
    /// before the caller does. Google SRE shaves "a few hundred ms" per hop across regions; a
    /// few ms suit a data centre.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// let l = DeadlinePropagationLayer::builder().margin(Duration::from_millis(200)).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Never propagate more than this (in `[1 ms, MAX_TIMEOUT]`), deadline or not: set it to the
    /// per-attempt timeout when this layer runs inside a retry layer, so that the callee stops
    /// when the attempt is abandoned rather than when the whole call is.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// assert!(DeadlinePropagationLayer::builder().max_timeout(Duration::from_micros(10)).build().is_err());
    /// ```
    pub fn max_timeout(mut self, max: Duration) -> Self {
        self.max_timeout = Some(max);
        self
    }

    /// Where and how to record telemetry: the meter (given with [`Telemetry::meter`], else the
    /// global provider's `steadfast` meter, captured when the layer is built) and the instance
    /// name.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// # use steadfast_layers::telemetry::Telemetry;
    /// let l = DeadlinePropagationLayer::builder().telemetry(Telemetry::new().name("to-users")).build()?;
    /// # let _ = l;
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn telemetry(mut self, telemetry: Telemetry) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// Validates and builds the layer.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlinePropagationLayer;
    /// assert!(DeadlinePropagationLayer::builder().build().is_ok());
    /// ```
    pub fn build(self) -> Result<DeadlinePropagationLayer, ConfigError> {
        check_header(&self.header)?;
        if self.margin > MAX_TIMEOUT {
            return Err(ConfigError::out_of_range(
                "margin",
                self.margin,
                "[0, 99999999 h]",
            ));
        }
        if let Some(max) = self.max_timeout {
            if max.is_zero() {
                return Err(ConfigError::zero("max_timeout"));
            }
            if max < Duration::from_millis(1) || max > MAX_TIMEOUT {
                return Err(ConfigError::out_of_range(
                    "max_timeout",
                    max,
                    "[1 ms, 99999999 h]",
                ));
            }
        }
        Ok(DeadlinePropagationLayer::from_parts(
            self.header,
            self.margin,
            self.max_timeout,
            self.telemetry,
        ))
    }
}
