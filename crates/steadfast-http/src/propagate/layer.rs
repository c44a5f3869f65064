use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderName;
use http::{HeaderMap, HeaderValue};
use opentelemetry::metrics::Counter;
use opentelemetry::KeyValue;
use steadfast_layers::deadline::MAX_TIMEOUT;
use steadfast_layers::telemetry::{Attrs, Telemetry, REASON_KEY};
use tower_layer::Layer;

use super::{DeadlinePropagation, DeadlineServer};
use crate::codec::{
    decode_grpc_timeout, decode_timeout_ms, InvalidHeader, GRPC_TIMEOUT, REQUEST_TIMEOUT_MS,
};
use crate::error::ConfigError;

/// The default safety margin a client shaves off the deadline at each hop: 10 ms.
pub const DEFAULT_MARGIN: Duration = Duration::from_millis(10);

fn exceeded_counter(telemetry: &Telemetry) -> Counter<u64> {
    telemetry
        .resolve_meter()
        .u64_counter("steadfast.deadline.exceeded")
        .with_unit("{call}")
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

/// What [`DeadlineServerLayer`] does with a deadline header that does not decode.
///
/// | | `grpc-timeout` (gRPC request) | the plain-HTTP header |
/// |---|---|---|
/// | [`Reject`](Self::Reject) (default) | `grpc-status: 13` (`INTERNAL`), `grpc-message: malformed grpc-timeout: …`, HTTP 200, Trailers-Only | `400 Bad Request` (on a gRPC request: `INTERNAL`, as for `grpc-timeout`) |
/// | [`Ignore`](Self::Ignore) | served as if the header were absent | the same |
///
/// Either way the header is counted (`steadfast.deadline.invalid_header`, with `action` =
/// `rejected` or `ignored`) and traced (a DEBUG event). Rejecting is grpc-go's behaviour and
/// the safe default: ignoring a malformed timeout removes the caller's deadline, so the
/// handler may run unbounded for a caller that has long given up. A header is malformed when
/// its codec refuses it: for `grpc-timeout`, anything but 1 to 8 ASCII digits and one of
/// `H M S m u n` (no sign, space, other unit or lowercase `s`/`h`); for the plain header,
/// anything but ASCII digits (surrounding spaces allowed) that fit in a `u64`. A valid timeout
/// longer than [`MAX_TIMEOUT`] is not malformed: it is clamped to `MAX_TIMEOUT`.
///
/// ```
/// use steadfast_http::propagate::{DeadlineServerLayer, MalformedDeadline};
/// assert_eq!(DeadlineServerLayer::new().on_malformed(), MalformedDeadline::Reject);
/// // Today's lenient behaviour, e.g. behind clients known to send junk:
/// let lenient = DeadlineServerLayer::builder().on_malformed(MalformedDeadline::Ignore).build()?;
/// assert_eq!(lenient.on_malformed(), MalformedDeadline::Ignore);
/// # Ok::<(), steadfast_http::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum MalformedDeadline {
    /// Fail the call: gRPC `INTERNAL`, plain HTTP `400` (the default).
    #[default]
    Reject,
    /// Serve the request as if the malformed header were absent (the behaviour before this
    /// option existed). The handler runs without that deadline, possibly unbounded.
    Ignore,
}

impl MalformedDeadline {
    const fn label(self) -> &'static str {
        match self {
            MalformedDeadline::Reject => "rejected",
            MalformedDeadline::Ignore => "ignored",
        }
    }
}

/// A deadline header that did not decode: which one, and why. The rejection path builds its
/// response from it.
#[derive(Clone, Debug)]
pub(super) struct Malformed {
    pub(super) header: HeaderName,
    pub(super) error: InvalidHeader,
}

#[derive(Debug)]
pub(super) struct ServerShared {
    pub(super) header: HeaderName,
    pub(super) enforce: bool,
    pub(super) malformed: MalformedDeadline,
    pub(super) exceeded: Counter<u64>,
    pub(super) invalid: Counter<u64>,
    pub(super) attrs: Attrs,
    pub(super) telemetry: Telemetry,
}

impl ServerShared {
    /// The earlest of the timeouts the request carries (every value of each header counts),
    /// clamped to [`MAX_TIMEOUT`]. A malformed value is reported, then either fails the request
    /// (`Err`, with [`MalformedDeadline::Reject`]) or is skipped.
    pub(super) fn wire_timeout(
        &self,
        headers: &HeaderMap,
        grpc: bool,
    ) -> Result<Option<Duration>, Malformed> {
        let mut timeout: Option<Duration> = None;
        if grpc {
            for v in headers.get_all(GRPC_TIMEOUT) {
                self.take(&mut timeout, &GRPC_TIMEOUT, v, decode_grpc_timeout(v), grpc)?;
            }
        }
        for v in headers.get_all(&self.header) {
            self.take(&mut timeout, &self.header, v, decode_timeout_ms(v), grpc)?;
        }
        Ok(timeout.map(|t| t.min(MAX_TIMEOUT)))
    }

    fn take(
        &self,
        timeout: &mut Option<Duration>,
        header: &HeaderName,
        value: &HeaderValue,
        decoded: Result<Duration, InvalidHeader>,
        grpc: bool,
    ) -> Result<(), Malformed> {
        match decoded {
            Ok(t) => {
                *timeout = Some(timeout.map_or(t, |old| old.min(t)));
                Ok(())
            }
            Err(error) => {
                self.report_malformed(header, value, &error, grpc);
                match self.malformed {
                    MalformedDeadline::Reject => Err(Malformed {
                        header: header.clone(),
                        error,
                    }),
                    MalformedDeadline::Ignore => Ok(()),
                }
            }
        }
    }

    /// Counts and traces a malformed header (a rare path: it may allocate).
    fn report_malformed(
        &self,
        header: &HeaderName,
        value: &HeaderValue,
        e: &InvalidHeader,
        grpc: bool,
    ) {
        let action = self.malformed.label();
        let mut attrs = Vec::with_capacity(self.attrs.base().len() + 2);
        attrs.extend(self.attrs.base().iter().cloned());
        attrs.push(KeyValue::new(
            "steadfast.deadline.header",
            header.as_str().to_owned(),
        ));
        attrs.push(KeyValue::new("steadfast.deadline.action", action));
        self.invalid.add(1, &attrs);
        let name = self.telemetry.instance_name();
        let header = header.as_str();
        match self.malformed {
            MalformedDeadline::Reject => tracing::debug!(
                target: "steadfast::propagate",
                instance = name,
                header,
                value = ?value,
                action,
                grpc,
                error = %e,
                "malformed deadline header: request rejected"
            ),
            MalformedDeadline::Ignore => tracing::debug!(
                target: "steadfast::propagate",
                instance = name,
                header,
                value = ?value,
                action,
                grpc,
                error = %e,
                "malformed deadline header ignored"
            ),
        }
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
    /// request), enforces the deadline, rejects malformed deadline headers
    /// ([`MalformedDeadline::Reject`]), default telemetry.
    ///
    /// ```
    /// # use steadfast_http::propagate::DeadlineServerLayer;
    /// assert_eq!(DeadlineServerLayer::new().header(), "x-request-timeout-ms");
    /// ```
    pub fn new() -> Self {
        let telemetry = Telemetry::default();
        Self::from_parts(
            REQUEST_TIMEOUT_MS,
            true,
            MalformedDeadline::Reject,
            telemetry,
        )
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
            malformed: MalformedDeadline::Reject,
            telemetry: Telemetry::default(),
        }
    }

    fn from_parts(
        header: HeaderName,
        enforce: bool,
        malformed: MalformedDeadline,
        telemetry: Telemetry,
    ) -> Self {
        let meter = telemetry.resolve_meter();
        DeadlineServerLayer {
            shared: Arc::new(ServerShared {
                header,
                enforce,
                malformed,
                exceeded: exceeded_counter(&telemetry),
                invalid: meter
                    .u64_counter("steadfast.deadline.invalid_header")
                    .with_unit("{request}")
                    .with_description(
                        "Incoming deadline headers that did not decode, by header and action (rejected or ignored)",
                    )
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

    /// What is done with a malformed deadline header (see [`MalformedDeadline`]).
    ///
    /// ```
    /// # use steadfast_http::propagate::{DeadlineServerLayer, MalformedDeadline};
    /// assert_eq!(DeadlineServerLayer::new().on_malformed(), MalformedDeadline::Reject);
    /// ```
    pub fn on_malformed(&self) -> MalformedDeadline {
        self.shared.malformed
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
/// assert_eq!(err.path(), "header");
/// ```
#[derive(Clone, Debug)]
pub struct DeadlineServerLayerBuilder {
    header: HeaderName,
    enforce: bool,
    malformed: MalformedDeadline,
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

    /// What to do with a deadline header that does not decode (default
    /// [`MalformedDeadline::Reject`]: gRPC `INTERNAL` "malformed grpc-timeout", as grpc-go does;
    /// plain HTTP `400`). [`MalformedDeadline::Ignore`] serves the request as if the header were
    /// absent. Both count and trace it.
    ///
    /// ```
    /// # use steadfast_http::propagate::{DeadlineServerLayer, MalformedDeadline};
    /// let l = DeadlineServerLayer::builder().on_malformed(MalformedDeadline::Ignore).build()?;
    /// assert_eq!(l.on_malformed(), MalformedDeadline::Ignore);
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn on_malformed(mut self, action: MalformedDeadline) -> Self {
        self.malformed = action;
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
            self.malformed,
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
/// assert_eq!(err.path(), "margin");
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
