//! What the HTTP layer answers by itself, before or around the routes: a body not
//! declared as JSON, request heads hyper cannot or will not parse, and answers that
//! end a connection. Each is problem+json like every other error, and a connection
//! the server will close says so.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{ADMIN_TOKEN, TestApp, campaign_body, token, unique};

async fn problem(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    assert_eq!(
        resp.headers()["content-type"],
        "application/problem+json",
        "status {status}"
    );
    (status, resp.json().await.unwrap())
}

/// Only a body declared as JSON is read as JSON: a form is 415 and changes nothing,
/// while JSON with parameters, a `+json` type and an empty untyped body are served.
#[tokio::test]
async fn a_body_not_declared_as_json_is_415_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let campaign = app.campaign(5, 1).await;
    let key = unique("form");
    let post = |content_type: Option<&'static str>, body: String| {
        let mut req = app
            .client
            .post(app.url("/v1/admin/campaigns"))
            .bearer_auth(ADMIN_TOKEN)
            .header("Idempotency-Key", &key)
            .body(body);
        if let Some(t) = content_type {
            req = req.header("content-type", t);
        }
        req.send()
    };
    let refused = [
        (
            Some("application/x-www-form-urlencoded"),
            "name=x&total_stock=5",
        ),
        (None, r#"{"name": "untyped"}"#),
        (Some("text/plain"), r#"{"name": "plain"}"#),
    ];
    for (content_type, body) in refused {
        let (status, p) = problem(post(content_type, body.to_string()).await.unwrap()).await;
        assert_eq!(
            (status, p["code"].as_str()),
            (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Some("unsupported_media_type")
            ),
            "{content_type:?}"
        );
    }
    let alice = token(&unique("alice"));
    let grab = app
        .client
        .post(app.url(&format!("/v1/campaigns/{campaign}/claims")))
        .bearer_auth(&alice)
        .header("Idempotency-Key", unique("grab"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("x=1")
        .send()
        .await
        .unwrap();
    let (status, _) = problem(grab).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (_, wallet) = app.get_json("/v1/me/vouchers", Some(&alice)).await;
    assert_eq!(wallet["items"], json!([]));

    // The refused key was never recorded: sent again as JSON, it creates afresh.
    let resp = post(
        Some("application/json; charset=utf-8"),
        campaign_body(5, 1).to_string(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert!(resp.headers().get("idempotent-replayed").is_none());

    let patched = app
        .client
        .patch(app.url(&format!("/v1/admin/campaigns/{campaign}")))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", unique("patch"))
        .header("content-type", "Application/Merge-Patch+JSON")
        .body(r#"{"paused": true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    app.admin_patch(&campaign, json!({"paused": false})).await;

    // No body, no Content-Type: the grab needs neither.
    let g = app.grab(&alice, &campaign, &unique("grab")).await;
    assert_eq!(g.status, StatusCode::CREATED, "{}", g.body);
    let c = app.assert_invariants(&campaign).await;
    assert_eq!(c["issued"], 1);
}

/// How long a test waits on the server before calling it a hang.
const PATIENCE: Duration = Duration::from_secs(30);

/// One response read off a raw connection.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// Header fields, names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Asserts a problem+json answer with this status and code, in the shape every
    /// error has, and returns it.
    fn assert_problem(&self, status: u16, code: &str) -> Value {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json"),
            "{self:?}"
        );
        let p = self.json();
        assert_eq!(p["code"], code, "{p}");
        assert_eq!(p["status"], status, "{p}");
        for field in ["type", "title", "detail"] {
            assert!(p[field].is_string(), "{field} missing: {p}");
        }
        p
    }
}

/// Splits what a connection said into its responses (all framed by Content-Length).
fn answers(mut said: &[u8]) -> Vec<Answer> {
    let mut out = Vec::new();
    while let Some(end) = said.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&said[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.get(9..12))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let rest = &said[end + 4..];
        let body = rest[..len.min(rest.len())].to_vec();
        said = &rest[len.min(rest.len())..];
        out.push(Answer {
            status,
            headers,
            body,
        });
    }
    out
}

/// Reads until the server closes the connection.
async fn until_closed(s: &mut TcpStream) -> Vec<u8> {
    let mut said = Vec::new();
    tokio::time::timeout(PATIENCE, s.read_to_end(&mut said))
        .await
        .expect("the server never closed the connection")
        .ok();
    said
}

/// Reads exactly one response off a connection that stays open.
async fn next_answer(s: &mut TcpStream) -> Answer {
    let mut said = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = said.windows(4).position(|w| w == b"\r\n\r\n") {
            let first = answers(&said).remove(0);
            if said.len() >= end + 4 + first.body.len()
                && first.body.len()
                    == first
                        .header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0)
            {
                return first;
            }
        }
        let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
            .await
            .expect("no answer")
            .unwrap();
        assert!(
            n > 0,
            "closed mid-answer: {}",
            String::from_utf8_lossy(&said)
        );
        said.extend_from_slice(&buf[..n]);
    }
}

/// Sends `request` on a new connection; returns what the server said until it
/// closed. A write cut short by the server's answer is not an error here.
async fn exchange(app: &TestApp, request: &[u8]) -> Vec<Answer> {
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    let _ = s.write_all(request).await;
    answers(&until_closed(&mut s).await)
}

/// A head whose one extra header field makes it `size` bytes long.
fn head_of(size: usize) -> Vec<u8> {
    let start = b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\nX-Padding: ";
    let mut head = start.to_vec();
    head.resize(size - 4, b'p');
    head.extend_from_slice(b"\r\n\r\n");
    head
}

/// What hyper answers by itself, with a bare status and no body, is answered as
/// problem+json with `Connection: close` instead, and the connection is then closed.
#[tokio::test]
async fn a_malformed_request_line_or_header_is_400_problem_json() {
    let app = TestApp::spawn().await;
    for request in [
        &b"GET /healthz HTTP/1.1 please\r\nHost: voucherd\r\n\r\n"[..],
        b"GET /he lthz HTTP/1.1\r\nHost: voucherd\r\n\r\n",
        b"GET /healthz HTTP/3\r\nHost: voucherd\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost voucherd\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: voucherd\r\nContent-Length: 1, 2\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: voucherd\r\nTransfer-Encoding: gzip\r\n\r\n",
    ] {
        let said = exchange(&app, request).await;
        assert_eq!(said.len(), 1, "{said:?}");
        said[0].assert_problem(400, "malformed_request");
        assert_eq!(said[0].header("connection"), Some("close"));
    }
}

/// A head over 16 KiB, or with over 100 fields, is 431 problem+json; one just under
/// the limit is served.
#[tokio::test]
async fn a_head_over_the_limit_is_431_problem_json() {
    let app = TestApp::spawn().await;
    let said = exchange(&app, &head_of(20 * 1024)).await;
    assert_eq!(said.len(), 1, "{said:?}");
    said[0].assert_problem(431, "headers_too_large");
    assert_eq!(said[0].header("connection"), Some("close"));

    let mut many = b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\n".to_vec();
    for n in 0..100 {
        many.extend_from_slice(format!("X-Field-{n}: {n}\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let said = exchange(&app, &many).await;
    said[0].assert_problem(431, "headers_too_large");

    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(&head_of(16 * 1024)).await.unwrap();
    let served = next_answer(&mut s).await;
    assert_eq!(served.status, 200, "{served:?}");
}

/// Kept-alive connections are checked at every head, not only the first: a bad head
/// after a served request, even one pipelined behind it, is answered as
/// problem+json once the requests before it are answered.
#[tokio::test]
async fn every_head_on_a_kept_alive_connection_is_checked() {
    let app = TestApp::spawn().await;
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(next_answer(&mut s).await.status, 200);
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\nX-Bad Name: 1\r\n\r\n")
        .await
        .unwrap();
    let said = answers(&until_closed(&mut s).await);
    assert_eq!(said.len(), 1, "{said:?}");
    said[0].assert_problem(400, "malformed_request");

    let body = campaign_body(3, 1).to_string();
    let mut pipelined = format!(
        "POST /v1/admin/campaigns HTTP/1.1\r\nHost: voucherd\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Idempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        unique("pipelined"),
        body.len()
    )
    .into_bytes();
    pipelined.extend_from_slice(&head_of(20 * 1024));
    let said = exchange(&app, &pipelined).await;
    assert_eq!(said.len(), 2, "{said:?}");
    assert_eq!(said[0].status, 201, "{said:?}");
    let campaign = said[0].json()["id"].as_str().unwrap().to_string();
    said[1].assert_problem(431, "headers_too_large");
    assert_eq!(said[1].header("connection"), Some("close"));
    app.assert_invariants(&campaign).await;
}

/// An answer given before the request body was read ends the connection, and says
/// `Connection: close`: a 413, and an early refusal of a client waiting for
/// `100 Continue`. A small body the answer left unread is drained instead, and the
/// connection is kept.
#[tokio::test]
async fn an_answer_that_ends_the_connection_says_connection_close() {
    let app = TestApp::spawn().await;
    let big = vec![b' '; 100 * 1024];
    let resp = app
        .client
        .post(app.url("/v1/admin/campaigns"))
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", unique("big"))
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["connection"], "close");
    let (status, p) = problem(resp).await;
    assert_eq!(
        (status, p["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large"))
    );
    // The client's next request goes on a new connection, and is served.
    let (status, _) = app.get_json("/healthz", None).await;
    assert_eq!(status, StatusCode::OK);

    let mut request = format!(
        "POST /v1/admin/campaigns HTTP/1.1\r\nHost: voucherd\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Idempotency-Key: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        unique("big"),
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    let said = exchange(&app, &request).await;
    assert_eq!(said.len(), 1, "{said:?}");
    said[0].assert_problem(413, "payload_too_large");
    assert_eq!(said[0].header("connection"), Some("close"));

    // Waiting for `100 Continue`, refused before the body was asked for: closed.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        b"POST /v1/admin/campaigns HTTP/1.1\r\nHost: voucherd\r\nAuthorization: Bearer nope\r\n\
          Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    )
    .await
    .unwrap();
    let said = answers(&until_closed(&mut s).await);
    assert_eq!(said.len(), 1, "{said:?}");
    said[0].assert_problem(401, "unauthorized");
    assert_eq!(said[0].header("connection"), Some("close"));

    // A small body the answer did not need: drained, and the connection serves on.
    let mut s = TcpStream::connect(app.addr).await.unwrap();
    s.write_all(
        b"POST /v1/admin/campaigns HTTP/1.1\r\nHost: voucherd\r\nAuthorization: Bearer nope\r\n\
          Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await
    .unwrap();
    let refused = next_answer(&mut s).await;
    refused.assert_problem(401, "unauthorized");
    assert_eq!(refused.header("connection"), None, "{refused:?}");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(next_answer(&mut s).await.status, 200);
}

/// The served OpenAPI document lists 431 on every operation and 415 on every one
/// that takes a body, as problem+json.
#[tokio::test]
async fn the_openapi_documents_415_and_431() {
    let app = TestApp::spawn().await;
    let (_, spec) = app.get_json("/openapi.json", None).await;
    let paths = spec["paths"].as_object().unwrap();
    let mut mutating = 0;
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let documented = |status: &str| {
                op["responses"][status]["content"]["application/problem+json"].is_object()
            };
            assert!(documented("431"), "{method} {path}: no 431");
            if ["post", "patch", "delete"].contains(&method.as_str()) {
                mutating += 1;
                assert!(documented("415"), "{method} {path}: no 415");
            }
        }
    }
    assert!(mutating > 0);
}
