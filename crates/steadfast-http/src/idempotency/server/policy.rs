use http::StatusCode;

/// Which responses of an executed request are stored and replayed. A response that is not
/// stored is returned as it is and its key released, so a retry executes again.
///
/// ```
/// use http::StatusCode;
/// use steadfast_http::idempotency::StoreResponses;
/// let default = StoreResponses::default();
/// assert!(default.stores(StatusCode::CREATED));
/// assert!(default.stores(StatusCode::NOT_FOUND));
/// assert!(!default.stores(StatusCode::TOO_MANY_REQUESTS));
/// assert!(!default.stores(StatusCode::INTERNAL_SERVER_ERROR));
/// assert!(StoreResponses::All.stores(StatusCode::INTERNAL_SERVER_ERROR));
/// let only_created = StoreResponses::Custom(|s| s == StatusCode::CREATED);
/// assert!(!only_created.stores(StatusCode::OK));
/// ```
#[derive(Clone, Copy, Debug, Default)]
#[non_exhaustive]
pub enum StoreResponses {
    /// `2xx` and `4xx`, except `408 Request Timeout` and `429 Too Many Requests` (transient:
    /// replaying them for the key's whole lifetime would turn a momentary refusal into a
    /// permanent one). `5xx` are not stored, so a retry after a server error executes again.
    #[default]
    SuccessAndClientErrors,
    /// Every response, once execution began (`5xx` included), as Stripe does: a retry never
    /// executes twice, even after a failure halfway through. Errors of the inner service (no
    /// response at all) still release the key.
    All,
    /// Statuses for which the function returns `true`.
    Custom(fn(StatusCode) -> bool),
}

impl StoreResponses {
    /// Whether a response with `status` is stored.
    pub fn stores(&self, status: StatusCode) -> bool {
        match self {
            StoreResponses::SuccessAndClientErrors => {
                status.is_success()
                    || (status.is_client_error()
                        && status != StatusCode::REQUEST_TIMEOUT
                        && status != StatusCode::TOO_MANY_REQUESTS)
            }
            StoreResponses::All => true,
            StoreResponses::Custom(f) => f(status),
        }
    }
}
