use std::fmt;

/// The end-to-end deadline passed before the call finished, or had already passed when the
/// request arrived. Distinct from a per-attempt [`Elapsed`](crate::timeout::Elapsed): it means
/// the original caller no longer waits, so nothing should retry.
///
/// ```
/// use steadfast_layers::deadline::DeadlineExceeded;
/// let e = DeadlineExceeded::new();
/// assert!(!e.on_arrival());
/// assert_eq!(e.to_string(), "deadline exceeded");
/// assert!(DeadlineExceeded::on_arrival_error().on_arrival());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadlineExceeded {
    on_arrival: bool,
}

impl DeadlineExceeded {
    /// The deadline passed while the call was in flight.
    pub const fn new() -> Self {
        Self { on_arrival: false }
    }

    /// The request arrived with its deadline already passed; the inner service was not called.
    pub const fn on_arrival_error() -> Self {
        Self { on_arrival: true }
    }

    /// Whether the request was rejected on arrival, without calling the inner service.
    pub const fn on_arrival(&self) -> bool {
        self.on_arrival
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.on_arrival {
            f.write_str("deadline exceeded before the call started")
        } else {
            f.write_str("deadline exceeded")
        }
    }
}

impl std::error::Error for DeadlineExceeded {}
