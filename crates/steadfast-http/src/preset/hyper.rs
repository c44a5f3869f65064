use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::body::ReplayBody;

/// A hyper-util client typed for the presets: plain-TCP HTTP/1.1, whose request body is
/// [`ReplayBody<B>`](ReplayBody), so that the stack can re-send a request for a retry or a
/// hedge. You send the presets ordinary `http::Request<B>`s (`Full<Bytes>`, `Empty<Bytes>`, a
/// boxed body); the preset wraps the body once, and the client sees the wrapper.
///
/// It is `Client::builder(TokioExecutor::new()).build_http::<ReplayBody<B>>()`: build your own
/// the same way for other connectors (TLS) or settings. A client built for `B` itself
/// (`build_http::<Full<Bytes>>()`) cannot carry a replayable body, and the compiler says so
/// (no `Service<Request<ReplayBody<_>>>` implementation).
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::Full;
/// use steadfast_http::preset::{hyper_client, standard_client};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), steadfast_http::ConfigError> {
/// let client = standard_client(hyper_client::<Full<Bytes>>())?;
/// // client.oneshot(http::Request::get("http://127.0.0.1:8080/").body(Full::new(Bytes::new()))?)
/// # let _ = client;
/// # Ok(()) }
/// ```
pub fn hyper_client<B>() -> Client<HttpConnector, ReplayBody<B>>
where
    ReplayBody<B>: http_body::Body + Send,
    <ReplayBody<B> as http_body::Body>::Data: Send,
{
    Client::builder(TokioExecutor::new()).build_http()
}
