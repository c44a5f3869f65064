use tower_layer::Layer;

use super::{WithReplayBody, DEFAULT_REPLAY_LIMIT};
use crate::error::ConfigError;

/// The largest replay buffer accepted: 64 MiB per request (buffers are per request in flight).
pub const MAX_REPLAY_LIMIT: usize = 64 * 1024 * 1024;

/// Wraps each request's body in a [`ReplayBody`](super::ReplayBody), so that a retry layer below
/// it (with [`HttpReplay`](super::HttpReplay)) can resend it.
///
/// ```
/// use tower::{service_fn, Layer, ServiceExt};
/// use steadfast_http::body::{ReplayBody, ReplayBodyLayer};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let svc = ReplayBodyLayer::new().layer(service_fn(|req: http::Request<ReplayBody<String>>| async move {
///     Ok::<_, std::convert::Infallible>(req.body().is_replayable())
/// }));
/// assert!(svc.oneshot(http::Request::new(String::from("hi"))).await.unwrap());
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct ReplayBodyLayer {
    limit: usize,
}

impl Default for ReplayBodyLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayBodyLayer {
    /// A layer with the default 64 KiB buffer.
    ///
    /// ```
    /// # use steadfast_http::body::{ReplayBodyLayer, DEFAULT_REPLAY_LIMIT};
    /// assert_eq!(ReplayBodyLayer::new().limit(), DEFAULT_REPLAY_LIMIT);
    /// ```
    pub const fn new() -> Self {
        ReplayBodyLayer {
            limit: DEFAULT_REPLAY_LIMIT,
        }
    }

    /// A layer with a `limit`-byte buffer, at most [`MAX_REPLAY_LIMIT`] (0 replays empty bodies
    /// only).
    ///
    /// ```
    /// # use steadfast_http::body::ReplayBodyLayer;
    /// assert_eq!(ReplayBodyLayer::with_limit(1024)?.limit(), 1024);
    /// assert!(ReplayBodyLayer::with_limit(1 << 40).is_err());
    /// # Ok::<(), steadfast_http::ConfigError>(())
    /// ```
    pub fn with_limit(limit: usize) -> Result<Self, ConfigError> {
        if limit > MAX_REPLAY_LIMIT {
            return Err(ConfigError::out_of_range("limit", limit, "[0, 64 MiB]"));
        }
        Ok(ReplayBodyLayer { limit })
    }

    /// The buffer's limit in bytes.
    ///
    /// ```
    /// # use steadfast_http::body::ReplayBodyLayer;
    /// assert_eq!(ReplayBodyLayer::new().limit(), 64 * 1024);
    /// ```
    pub const fn limit(&self) -> usize {
        self.limit
    }
}

impl<S> Layer<S> for ReplayBodyLayer {
    type Service = WithReplayBody<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WithReplayBody {
            inner,
            limit: self.limit,
        }
    }
}
