use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{HeaderValue, Response, StatusCode};
use pin_project::pin_project;
use steadfast_layers::deadline::{Deadline, DeadlineExceeded, Scoped};
use steadfast_layers::BoxError;
use tokio::time::{sleep_until, Sleep};
use tracing::Span;

use super::layer::{Malformed, ServerShared};
use crate::codec::{GrpcCode, GRPC_MESSAGE, GRPC_STATUS};

/// The response a server gives for a handler whose deadline is spent: `504 Gateway Timeout`, or
/// for gRPC a Trailers-Only `200` with `grpc-status: 4` (`DEADLINE_EXCEEDED`).
pub(super) fn deadline_response<B: Default>(grpc: bool) -> Response<B> {
    let mut res = Response::new(B::default());
    if grpc {
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(GRPC_STATUS, GrpcCode::DeadlineExceeded.to_header_value());
        h.insert(GRPC_MESSAGE, HeaderValue::from_static("deadline exceeded"));
    } else {
        *res.status_mut() = StatusCode::GATEWAY_TIMEOUT;
    }
    res
}

/// The response a server gives for a request whose deadline header is malformed (with
/// [`MalformedDeadline::Reject`](super::MalformedDeadline::Reject)): `400 Bad Request`, or for
/// gRPC a Trailers-Only `200` with `grpc-status: 13` (`INTERNAL`) and `grpc-message` from
/// [`malformed_message`], as grpc-go answers.
pub(super) fn malformed_response<B: Default>(grpc: bool, message: &HeaderValue) -> Response<B> {
    let mut res = Response::new(B::default());
    if grpc {
        let h = res.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        h.insert(GRPC_STATUS, GrpcCode::Internal.to_header_value());
        h.insert(GRPC_MESSAGE, message.clone());
    } else {
        *res.status_mut() = StatusCode::BAD_REQUEST;
    }
    res
}

/// `malformed <header>: <what is wrong>`, percent-encoded as `grpc-message` requires.
fn malformed_message(malformed: &Malformed) -> HeaderValue {
    let text = format!(
        "malformed {}: {}",
        malformed.header,
        malformed.error.problem()
    );
    let mut encoded = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::try_from(encoded).unwrap_or(HeaderValue::from_static("malformed deadline header"))
}

/// The response future of [`DeadlineServer`](super::DeadlineServer).
///
/// It polls the handler first and arms its timer only if the handler is still pending.
#[pin_project]
#[derive(Debug)]
pub struct ServerFuture<F> {
    #[pin]
    kind: ServerKind<F>,
}

#[pin_project(project = ServerKindProj)]
#[derive(Debug)]
enum ServerKind<F> {
    Passthrough {
        #[pin]
        inner: F,
    },
    Scoped {
        #[pin]
        inner: Scoped<F>,
        #[pin]
        sleep: Option<Sleep>,
        deadline: Deadline,
        grpc: bool,
        span: Span,
        shared: Arc<ServerShared>,
    },
    Rejected {
        grpc: bool,
    },
    Malformed {
        grpc: bool,
        message: HeaderValue,
    },
}

impl<F> ServerFuture<F> {
    pub(super) fn passthrough(inner: F) -> Self {
        Self {
            kind: ServerKind::Passthrough { inner },
        }
    }

    pub(super) fn scoped(
        inner: Scoped<F>,
        deadline: Deadline,
        grpc: bool,
        span: Span,
        shared: Arc<ServerShared>,
    ) -> Self {
        Self {
            kind: ServerKind::Scoped {
                inner,
                sleep: None,
                deadline,
                grpc,
                span,
                shared,
            },
        }
    }

    pub(super) fn rejected(grpc: bool) -> Self {
        Self {
            kind: ServerKind::Rejected { grpc },
        }
    }

    pub(super) fn malformed(grpc: bool, malformed: &Malformed) -> Self {
        Self {
            kind: ServerKind::Malformed {
                grpc,
                message: malformed_message(malformed),
            },
        }
    }
}

impl<F, B, E> Future for ServerFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Default,
{
    type Output = Result<Response<B>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        let grpc = match kind.as_mut().project() {
            ServerKindProj::Passthrough { inner } => return inner.poll(cx),
            ServerKindProj::Rejected { grpc } => return Poll::Ready(Ok(deadline_response(*grpc))),
            ServerKindProj::Malformed { grpc, message } => {
                return Poll::Ready(Ok(malformed_response(*grpc, message)))
            }
            ServerKindProj::Scoped {
                inner,
                mut sleep,
                deadline,
                grpc,
                span,
                shared,
            } => {
                let _entered = span.enter();
                if let Poll::Ready(out) = inner.poll(cx) {
                    return Poll::Ready(out);
                }
                if !shared.enforce {
                    return Poll::Pending;
                }
                if sleep.is_none() {
                    sleep.set(Some(sleep_until(deadline.instant())));
                }
                if let Some(timer) = sleep.as_pin_mut() {
                    ready!(timer.poll(cx));
                }
                shared.count_exceeded("in_flight");
                tracing::debug!(
                    target: "steadfast::propagate",
                    reason = "in_flight",
                    grpc = *grpc,
                    "deadline exceeded: handler cancelled"
                );
                *grpc
            }
        };
        // Drop the handler now: its work stops with the caller's deadline.
        kind.set(ServerKind::Rejected { grpc });
        Poll::Ready(Ok(deadline_response(grpc)))
    }
}

/// The response future of [`DeadlinePropagation`](super::DeadlinePropagation): the inner call,
/// or [`DeadlineExceeded`] at once when nothing was left to send.
#[pin_project]
#[derive(Debug)]
pub struct PropagationFuture<F> {
    #[pin]
    inner: Option<F>,
}

impl<F> PropagationFuture<F> {
    pub(super) fn passthrough(inner: F) -> Self {
        Self { inner: Some(inner) }
    }

    pub(super) fn exceeded() -> Self {
        Self { inner: None }
    }
}

impl<F, T, E> Future for PropagationFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().inner.as_pin_mut() {
            Some(inner) => inner.poll(cx).map_err(Into::into),
            None => Poll::Ready(Err(DeadlineExceeded::on_arrival_error().into())),
        }
    }
}
