//! The request-head guard: every request head on a connection is read and checked
//! here before hyper parses it, so a head hyper would answer with a bare status of
//! its own (400 for a malformed request line or header field, 431 for a head over
//! the limit) is answered with problem+json, like every other error, instead.
//!
//! Every head is checked, not only a connection's first: clients pool their
//! connections, so a malformed or oversized head is as likely on a connection's
//! tenth request as on its first. Finding the heads means following the framing
//! between them: an accepted head is handed to hyper together with exactly its
//! `Content-Length` of body, and the next head is held until it is whole and
//! checked. A chunked body is not followed: its chunk sizes would be parsed twice,
//! here and by hyper, and two parsers that disagree about where a body ends disagree
//! about where the next request starts. After a chunked request the guard stands
//! aside and the response closes the connection (see `keep_alive`), so no later head
//! goes unchecked.
//!
//! A refused head is answered once hyper has finished the requests before it: the
//! guard gives hyper nothing more and wakes `server`, which shuts hyper down
//! gracefully; the answer is written when hyper closes the connection.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::http::{HeaderName, HeaderValue, Method, Uri, header};
use bytes::{Buf, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::Notify,
    time::Sleep,
};

use crate::error::{ApiError, PROBLEM_JSON, problem_body};

/// The largest request head served, from the request line to the blank line that
/// ends the header fields. This API's heads are a few hundred bytes (a JWT, a key);
/// the bound also caps what each open connection may make the server hold.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// The most header fields in one head; hyper is given the same bound.
pub(crate) const MAX_HEADERS: usize = 100;

/// The largest `Content-Length` hyper can represent (`u64::MAX - 2`; the two values
/// above it are its markers for "chunked" and "until close").
const MAX_BODY_LENGTH: u64 = u64::MAX - 2;

/// How much is read from the socket at a time while a head is incomplete.
const READ_CHUNK: usize = 8 * 1024;

/// After an answer that ends a connection whose client may still be sending (the
/// rest of a refused head, an unread body), what arrives is read and dropped for up
/// to this long and this much before the socket is closed. Closing a socket with
/// unread data makes the kernel send a reset, and a reset can reach the client
/// before it has read the answer, which it then never sees.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// How a request's body is framed, as hyper will read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length` bytes (0 without one).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// Checks the head at the start of `buf`: `Ok(None)` while it is incomplete,
/// `Ok(Some((head_len, framing)))` once it is whole and hyper will accept it, and an
/// error for each head hyper would refuse. The rules are hyper 1's own (its
/// `Server::parse`, with the same `httparse` and `http` calls), so the two agree on
/// every head; `tests::the_guard_refuses_exactly_what_hyper_refuses` holds them to it.
pub(crate) fn check(buf: &[u8]) -> Result<Option<(usize, Framing)>, ApiError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::HeadersTooLarge);
        }
        // Incomplete at the limit: the whole head is longer still.
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(ApiError::HeadersTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::Version) => {
            return Err(malformed(
                "the request line must end with HTTP/1.1 or HTTP/1.0",
            ));
        }
        Err(httparse::Error::Token) => return Err(malformed("the request line is malformed")),
        Err(_) => return Err(malformed("a header field is malformed")),
    };
    let method = req.method.unwrap_or_default();
    Method::from_bytes(method.as_bytes())
        .map_err(|_| malformed("the request method is malformed"))?;
    let target = req.path.unwrap_or_default();
    Uri::try_from(target).map_err(|_| malformed("the request target is not a valid URI"))?;
    let http_11 = req.version == Some(1);
    let (mut transfer_encoding, mut chunked, mut length) = (false, false, None);
    for field in req.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| malformed("a header field name is malformed"))?;
        if name == header::TRANSFER_ENCODING {
            if !http_11 {
                return Err(malformed(
                    "an HTTP/1.0 request cannot use Transfer-Encoding",
                ));
            }
            // Transfer-Encoding overrides any Content-Length, before it or after.
            transfer_encoding = true;
            length = None;
            chunked = ends_with_chunked(field.value);
        } else if name == header::CONTENT_LENGTH && !transfer_encoding {
            let n = digits(field.value).ok_or_else(bad_length)?;
            if length.is_some_and(|earlier| earlier != n) {
                return Err(bad_length());
            }
            if n > MAX_BODY_LENGTH {
                // hyper would answer 431 for it; it is the body that is too large.
                return Err(ApiError::PayloadTooLarge);
            }
            length = Some(n);
        }
    }
    if transfer_encoding && !chunked {
        return Err(malformed("Transfer-Encoding must end with chunked"));
    }
    let framing = if chunked {
        Framing::Chunked
    } else {
        Framing::Length(length.unwrap_or(0))
    };
    Ok(Some((len, framing)))
}

fn malformed(detail: &str) -> ApiError {
    ApiError::Malformed(detail.to_string())
}

fn bad_length() -> ApiError {
    malformed("Content-Length must be one unsigned decimal integer")
}

/// hyper's reading of `Transfer-Encoding`: its last coding, as visible ASCII.
fn ends_with_chunked(value: &[u8]) -> bool {
    HeaderValue::from_bytes(value)
        .ok()
        .and_then(|v| v.to_str().map(str::to_owned).ok())
        .and_then(|v| {
            v.rsplit(',')
                .next()
                .map(|last| last.trim().eq_ignore_ascii_case("chunked"))
        })
        .unwrap_or(false)
}

/// hyper's reading of `Content-Length`: ASCII digits only, no sign, no overflow.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        let digit = (b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Whether `bytes` may hold the end of a head (a blank line): the same quick scan
/// hyper makes before parsing again, so a head sent a byte at a time is not parsed
/// in full once per byte.
fn may_end_head(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// The answer to a refused head, written raw: there is no request for a response
/// type to answer, and it ends the connection.
fn raw_answer(error: &ApiError) -> Bytes {
    let status = error.status();
    let body = problem_body(status, error.code(), error.to_string(), None);
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {PROBLEM_JSON}\r\ncontent-length: {}\r\n\
         connection: close\r\ndate: {}\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
        chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT"),
    );
    let mut answer = BytesMut::with_capacity(head.len() + body.len());
    answer.extend_from_slice(head.as_bytes());
    answer.extend_from_slice(&body);
    answer.freeze()
}

/// A client connection as hyper sees it: reads pass through the checks above, writes
/// pass straight through, and closing writes a refused head's answer first.
pub(crate) struct HeadGuard<S> {
    io: S,
    /// A client that stops reading its answers would otherwise hold its connection
    /// slot (and the requests pipelined behind) for ever: a write that makes no
    /// progress for this long fails, and hyper drops the connection.
    write_stall: std::time::Duration,
    /// Running while a write or flush is pending; reset by any progress.
    stalled_since: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Bytes read from the client and not yet handed to hyper.
    held: BytesMut,
    /// How many more bytes hyper may have before the next head must be checked (the
    /// rest of an accepted head and its body); `None` once the guard stands aside.
    release: Option<u64>,
    /// How much of `held` was searched for the end of the current head; `None`
    /// before the first look at it.
    searched: Option<usize>,
    /// The answer to a refused head, written when hyper closes the connection.
    answer: Option<Bytes>,
    refused: Arc<Notify>,
    /// Set once the write side is shut and the guard lingers (see `LINGER`).
    linger: Option<Pin<Box<Sleep>>>,
    lingered: usize,
}

impl<S> HeadGuard<S> {
    /// Wraps a fresh connection. The `Notify` fires when a head is refused: the
    /// connection's driver then shuts hyper down gracefully.
    /// `write_stall`: how long a write may make no progress (the client reads
    /// nothing of its answers) before the connection is dropped.
    pub(crate) fn new(io: S, write_stall: std::time::Duration) -> (Self, Arc<Notify>) {
        let refused = Arc::new(Notify::new());
        let guard = HeadGuard {
            write_stall,
            stalled_since: None,
            io,
            held: BytesMut::new(),
            release: Some(0),
            searched: None,
            answer: None,
            refused: refused.clone(),
            linger: None,
            lingered: 0,
        };
        (guard, refused)
    }

    fn refuse(&mut self, error: &ApiError) {
        tracing::debug!(code = error.code(), "request head refused");
        metrics::counter!("voucherd_http_heads_refused_total", "code" => error.code()).increment(1);
        self.answer = Some(raw_answer(error));
        self.refused.notify_one();
    }

    /// Whether the client may still be sending when the connection closes: a
    /// refused head's remainder, a body hyper did not read, or bytes not looked at.
    fn may_have_unread(&self) -> bool {
        self.answer.is_some() || self.release != Some(0) || !self.held.is_empty()
    }

    fn released(&mut self, n: usize) {
        if let Some(left) = &mut self.release {
            *left -= n as u64;
        }
    }
}

impl<S: AsyncRead + Unpin> HeadGuard<S> {
    /// Reads up to `max` more bytes from the client into `held`; 0 at end of stream.
    fn fill(&mut self, cx: &mut Context<'_>, max: usize) -> Poll<io::Result<usize>> {
        let start = self.held.len();
        self.held.resize(start + max, 0);
        let mut buf = ReadBuf::new(&mut self.held[start..]);
        let polled = Pin::new(&mut self.io).poll_read(cx, &mut buf);
        let n = buf.filled().len();
        self.held.truncate(start + n);
        ready!(polled)?;
        Poll::Ready(Ok(n))
    }

    /// Gives hyper up to `limit` bytes: held ones first, else straight from the
    /// client. Nothing given is end of stream.
    fn hand_over(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
        limit: u64,
    ) -> Poll<io::Result<()>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if self.held.is_empty() {
            if out.remaining() <= limit {
                let before = out.filled().len();
                ready!(Pin::new(&mut self.io).poll_read(cx, out))?;
                let n = out.filled().len() - before;
                self.released(n);
                return Poll::Ready(Ok(()));
            }
            if ready!(self.fill(cx, limit.min(READ_CHUNK)))? == 0 {
                return Poll::Ready(Ok(()));
            }
        }
        let n = self.held.len().min(out.remaining()).min(limit);
        out.put_slice(&self.held[..n]);
        self.held.advance(n);
        self.released(n);
        Poll::Ready(Ok(()))
    }

    /// Looks at the next head: accepts it (setting `release`), refuses it, or reads
    /// more of it. `Ready(Ok(false))` is end of stream before a whole head.
    fn next_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        loop {
            let worth_parsing = match self.searched {
                None => !self.held.is_empty(),
                Some(from) => {
                    self.held.len() >= MAX_HEAD
                        || may_end_head(&self.held[from.saturating_sub(3)..])
                }
            };
            if worth_parsing {
                match check(&self.held) {
                    Ok(Some((len, framing))) => {
                        self.searched = None;
                        self.release = match framing {
                            Framing::Length(body) => Some(body.saturating_add(len as u64)),
                            Framing::Chunked => None,
                        };
                        return Poll::Ready(Ok(true));
                    }
                    Ok(None) => {}
                    Err(error) => {
                        self.refuse(&error);
                        return Poll::Pending;
                    }
                }
            }
            if !self.held.is_empty() {
                self.searched = Some(self.held.len());
            }
            if ready!(self.fill(cx, READ_CHUNK))? == 0 {
                return Poll::Ready(Ok(false));
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if out.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            // After a refusal hyper gets nothing more: it finishes what it has, is
            // shut down by the server, and the answer goes out as it closes.
            if this.answer.is_some() {
                return Poll::Pending;
            }
            match this.release {
                None => return this.hand_over(cx, out, u64::MAX),
                Some(0) => {
                    if !ready!(this.next_head(cx))? {
                        return Poll::Ready(Ok(()));
                    }
                }
                Some(left) => return this.hand_over(cx, out, left),
            }
        }
    }
}

impl<S> HeadGuard<S> {
    /// Passes a write's result on, timing how long writes make no progress.
    fn bounded<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        use std::future::Future;
        if result.is_ready() {
            self.stalled_since = None;
            return result;
        }
        let stall = self.write_stall;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if timer.as_mut().poll(cx).is_ready() {
            metrics::counter!("voucherd_http_write_stalls_total").increment(1);
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for HeadGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.bounded(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.bounded(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.bounded(cx, result)
    }

    /// hyper calls this once it has flushed its last response: the refused head's
    /// answer goes after it, then the write side is shut, then the guard lingers.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.linger.is_none() {
            if let Some(answer) = &mut this.answer {
                while answer.has_remaining() {
                    let n = ready!(Pin::new(&mut this.io).poll_write(cx, answer.chunk()))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    answer.advance(n);
                }
            }
            ready!(Pin::new(&mut this.io).poll_flush(cx))?;
            ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
            if !this.may_have_unread() {
                return Poll::Ready(Ok(()));
            }
            this.linger = Some(Box::pin(tokio::time::sleep(LINGER)));
        }
        let mut scratch = [0u8; 4096];
        while this.lingered < LINGER_BYTES {
            if let Some(deadline) = &mut this.linger
                && deadline.as_mut().poll(cx).is_ready()
            {
                break;
            }
            let mut buf = ReadBuf::new(&mut scratch);
            match Pin::new(&mut this.io).poll_read(cx, &mut buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
                Poll::Ready(Ok(())) => this.lingered += buf.filled().len(),
                Poll::Ready(Err(_)) => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"POST /v1/x?y=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";

    fn code(buf: &[u8]) -> Option<&'static str> {
        check(buf).err().map(|e| e.code())
    }

    #[test]
    fn a_whole_head_is_accepted_with_its_framing() {
        assert_eq!(
            check(GOOD).unwrap(),
            Some((GOOD.len() - 2, Framing::Length(2)))
        );
        let chunked =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(check(chunked).unwrap().unwrap().1, Framing::Chunked);
        let get = b"\r\nGET / HTTP/1.0\r\n\r\n";
        assert_eq!(check(get).unwrap(), Some((get.len(), Framing::Length(0))));
    }

    #[test]
    fn a_partial_head_waits_until_it_passes_the_limit() {
        assert!(check(&GOOD[..20]).unwrap().is_none());
        let mut long = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        long.resize(MAX_HEAD - 1, b'a');
        assert!(check(&long).unwrap().is_none());
        long.push(b'a');
        assert_eq!(code(&long), Some("headers_too_large"));
    }

    #[test]
    fn heads_hyper_refuses_are_refused_with_their_codes() {
        let mut many = b"GET / HTTP/1.1\r\n".to_vec();
        for n in 0..=MAX_HEADERS {
            many.extend_from_slice(format!("X-{n}: 1\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(code(&many), Some("headers_too_large"));
        for bad in [
            &b"GET / HTTP/2.0\r\n\r\n"[..],
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nNo Colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
            b"GET http://[::1 HTTP/1.1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        ] {
            assert_eq!(
                code(bad),
                Some("malformed_request"),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let huge = b"POST / HTTP/1.1\r\nContent-Length: 18446744073709551615\r\n\r\n";
        assert_eq!(code(huge), Some("payload_too_large"));
    }

    #[test]
    fn the_answer_is_problem_json_and_closes() {
        let answer = raw_answer(&ApiError::HeadersTooLarge);
        let text = std::str::from_utf8(&answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ncontent-type: application/problem+json\r\n"));
        assert!(head.contains("\r\nconnection: close\r\n"));
        assert!(head.contains(&format!("\r\ncontent-length: {}\r\n", body.len())));
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "headers_too_large");
        assert_eq!(problem["status"], 431);
    }

    mod against_hyper {
        use super::*;
        use proptest::prelude::*;

        /// What hyper itself does with a head, followed by the end of the stream.
        #[derive(Debug, PartialEq)]
        enum Hyper {
            /// It called the service.
            Served,
            /// It answered with this status without calling the service.
            Refused(u16),
            /// It closed without a word (an incomplete head, an HTTP/2 preface).
            Silent,
        }

        fn hyper_on(head: &[u8]) -> Hyper {
            use hyper::{server::conn::http1, service::service_fn};
            use hyper_util::rt::TokioIo;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let (client, server) = tokio::io::duplex(4 * MAX_HEAD);
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(String::from("served")))
                });
                // Half-close: the test ends its stream after the head, and hyper
                // must still answer rather than take that for a client gone.
                let conn = tokio::spawn(
                    http1::Builder::new()
                        .max_headers(MAX_HEADERS)
                        .half_close(true)
                        .serve_connection(TokioIo::new(server), service),
                );
                let (mut rd, mut wr) = tokio::io::split(client);
                wr.write_all(head).await.unwrap();
                wr.shutdown().await.unwrap();
                let mut out = Vec::new();
                let _ = rd.read_to_end(&mut out).await;
                let _ = conn.await;
                let text = String::from_utf8_lossy(&out);
                if text.contains("served") {
                    Hyper::Served
                } else if let Some(status) = text.get(9..12).and_then(|s| s.parse().ok()) {
                    Hyper::Refused(status)
                } else {
                    Hyper::Silent
                }
            })
        }

        #[test]
        fn hyper_refuses_bare_what_the_guard_answers() {
            assert_eq!(hyper_on(GOOD), Hyper::Served);
            assert_eq!(hyper_on(b"GET /a b HTTP/1.1\r\n\r\n"), Hyper::Refused(400));
            let mut many = b"GET / HTTP/1.1\r\n".to_vec();
            for n in 0..=MAX_HEADERS {
                many.extend_from_slice(format!("X-{n}: 1\r\n").as_bytes());
            }
            many.extend_from_slice(b"\r\n");
            assert_eq!(hyper_on(&many), Hyper::Refused(431));
            assert_eq!(hyper_on(&GOOD[..20]), Hyper::Silent);
        }

        fn mutated_head() -> impl Strategy<Value = Vec<u8>> {
            let pieces = prop::sample::select(vec![
                &b" "[..],
                b"\t",
                b"\r",
                b"\n",
                b"\r\n",
                b":",
                b",",
                b"\0",
                b"\x7f",
                b"\xff",
                b"/",
                b"?",
                b"[",
                b"0",
                b"9",
                b"-",
                b"chunked",
                b"HTTP/1.0",
                b"\r\nTransfer-Encoding: ",
                b"\r\nContent-Length: ",
                b"\r\nX-A: b",
            ]);
            let edits =
                prop::collection::vec((any::<prop::sample::Index>(), pieces, any::<bool>()), 0..4);
            (
                prop::sample::select(vec![
                    &b"POST /v1/a?b=c HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"[..],
                    b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                    b"PATCH http://x/y HTTP/1.0\r\nContent-Length: 1\r\n\r\nz",
                ]),
                edits,
            )
                .prop_map(|(base, edits)| {
                    let mut head = base.to_vec();
                    for (at, piece, replace) in edits {
                        let i = at.index(head.len() + 1);
                        if replace && i < head.len() {
                            head.splice(i..=i, piece.iter().copied());
                        } else {
                            head.splice(i..i, piece.iter().copied());
                        }
                    }
                    head
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the head, the guard refuses it exactly when hyper would
            /// answer it with a bare status, so no such answer ever reaches a client.
            #[test]
            fn the_guard_refuses_exactly_what_hyper_refuses(head in mutated_head()) {
                let guard = check(&head);
                match hyper_on(&head) {
                    Hyper::Served => prop_assert!(
                        matches!(guard, Ok(Some(_))),
                        "hyper serves it, the guard says {:?}", guard
                    ),
                    Hyper::Refused(status) => prop_assert!(
                        guard.is_err(),
                        "hyper answers {}, the guard says {:?}", status, guard
                    ),
                    // Incomplete for both, or refused here where hyper says nothing.
                    Hyper::Silent => prop_assert!(
                        !matches!(guard, Ok(Some(_))),
                        "hyper says nothing, the guard accepts"
                    ),
                }
            }
        }
    }
}
