use std::fmt;

/// A fault the chaos layer injected on purpose.
///
/// ```
/// use steadfast_layers::chaos::{FaultKind, InjectedFault};
/// let e = InjectedFault::new(FaultKind::Abort);
/// assert_eq!(e.kind(), FaultKind::Abort);
/// assert_eq!(e.to_string(), "injected fault: the response was dropped");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InjectedFault {
    kind: FaultKind,
}

/// Which fault was injected.
///
/// ```
/// use steadfast_layers::chaos::FaultKind;
/// assert_eq!(FaultKind::Error.label(), "error");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FaultKind {
    /// The call failed without reaching the inner service: the request was never sent.
    Error,
    /// The request was sent and served, but its response was dropped: the caller cannot know
    /// whether it took effect (a connection reset after the write).
    Abort,
}

impl FaultKind {
    /// A short label for metrics (`fault` attribute) and traces.
    ///
    /// ```
    /// # use steadfast_layers::chaos::FaultKind;
    /// assert_eq!(FaultKind::Abort.label(), "abort");
    /// ```
    pub const fn label(&self) -> &'static str {
        match self {
            FaultKind::Error => "error",
            FaultKind::Abort => "abort",
        }
    }
}

impl InjectedFault {
    /// An injected fault of `kind`.
    pub const fn new(kind: FaultKind) -> Self {
        Self { kind }
    }

    /// Which fault it was.
    pub const fn kind(&self) -> FaultKind {
        self.kind
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::Error => f.write_str("injected fault: error"),
            FaultKind::Abort => f.write_str("injected fault: the response was dropped"),
        }
    }
}

impl std::error::Error for InjectedFault {}
