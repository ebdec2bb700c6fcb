//! Whether a connection is kept after an answer, said out loud: an answer after
//! which the connection will be closed carries `Connection: close`, so a client
//! never sends its next request into a connection the server is about to drop.
//!
//! hyper keeps a connection only once the request body has been read to its end.
//! An answer given before that (a 413, or a 401 or 429 decided before the body was
//! looked at) would otherwise go out looking reusable and be followed by a close.
//! Here, as in Go's net/http, the unread rest of a body no larger than any this
//! service would read is drained before the answer goes out, so the connection is
//! kept; anything else, or a body the answer refused for its size or its slowness,
//! closes it, and the answer says so.

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    Router,
    body::{Body as AxumBody, Bytes},
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    response::Response,
};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use tower::ServiceExt;

/// The most of an unread body drained to keep its connection: what the service
/// would have read anyway (`BODY_LIMIT`).
const DRAIN_MAX: u64 = crate::BODY_LIMIT as u64;

/// Serves `req` with `app`, then settles whether its connection is kept: if the
/// request body was not read to its end, the rest is drained within `drain` when
/// that is cheap and sensible, and otherwise the answer says `Connection: close`.
pub(crate) async fn serve(app: Router, req: Request<Incoming>, drain: Duration) -> Response {
    let (parts, body) = req.into_parts();
    // A client that asked for `100 Continue` sends its body only once told to; if the
    // answer came without reading the body, asking for it now would make the client
    // upload what the answer already refused.
    let awaits_continue = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    // The head guard does not follow chunked framing (see `head`): after a chunked
    // request the connection closes, so no later head reaches hyper unchecked.
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let seen = Arc::new(Seen::default());
    let watched = Watched::new(body, seen.clone());
    let request = Request::from_parts(parts, AxumBody::new(watched));
    let mut response = match app.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    let kept = if chunked || seen.failed.load(Ordering::Acquire) {
        false
    } else if seen.finished.load(Ordering::Acquire) {
        true
    } else if refused_for_its_body(response.status())
        || (awaits_continue && !seen.polled.load(Ordering::Acquire))
    {
        false
    } else {
        drained(seen.take_leftover(), drain).await
    };
    if !kept {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Answers that refused the body itself (too large, too slow): draining it would
/// spend on it what the answer declined to.
fn refused_for_its_body(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
    )
}

/// Reads and drops the rest of a body the app left unread; whether it ended
/// cleanly, within `within` and `DRAIN_MAX`.
async fn drained(body: Option<Incoming>, within: Duration) -> bool {
    // `None`: the app still holds the body (it answered while reading), so its end
    // cannot be waited for here.
    let Some(mut body) = body else {
        return false;
    };
    if body.size_hint().upper().is_none_or(|rest| rest > DRAIN_MAX) {
        return false;
    }
    let to_end = async {
        loop {
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                None => return true,
                Some(Ok(_)) => {}
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(within, to_end).await.unwrap_or(false)
}

/// What became of a request body, seen from outside the app.
#[derive(Default)]
struct Seen {
    /// The app asked for the body at least once.
    polled: AtomicBool,
    /// The body was read to its end (or had none).
    finished: AtomicBool,
    /// Reading the body failed (cut short, badly framed): the connection is spent.
    failed: AtomicBool,
    /// The body as the app dropped it unfinished, kept so it can be drained.
    leftover: Mutex<Option<Incoming>>,
}

impl Seen {
    fn take_leftover(&self) -> Option<Incoming> {
        self.leftover
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A request body that reports to `Seen` how far it was read, and hands itself
/// back there if dropped before its end.
struct Watched {
    body: Option<Incoming>,
    seen: Arc<Seen>,
}

impl Watched {
    fn new(body: Incoming, seen: Arc<Seen>) -> Self {
        if body.is_end_stream() {
            seen.finished.store(true, Ordering::Release);
        }
        Watched {
            body: Some(body),
            seen,
        }
    }
}

impl Body for Watched {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let Some(body) = this.body.as_mut() else {
            return Poll::Ready(None);
        };
        this.seen.polled.store(true, Ordering::Release);
        let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
        match &frame {
            None => this.seen.finished.store(true, Ordering::Release),
            Some(Ok(_)) if body.is_end_stream() => {
                this.seen.finished.store(true, Ordering::Release);
            }
            Some(Ok(_)) => {}
            Some(Err(_)) => this.seen.failed.store(true, Ordering::Release),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if let Some(body) = self.body.take()
            && !self.seen.finished.load(Ordering::Acquire)
        {
            *self
                .seen
                .leftover
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(body);
        }
    }
}
