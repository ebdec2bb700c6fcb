//! Slow and idle clients: connections that never send, request heads sent a line at
//! a time and bodies sent a byte at a time are cut off by the server (the head
//! deadline, the body deadline with 408), and meanwhile everyone else is served.

use std::time::Duration;

use reqwest::StatusCode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::helpers::{ADMIN_TOKEN, RedisMode, TestApp, campaign_body, token, unique};

/// How long a test waits for the server to act before calling it a hang: far past
/// the 1 s deadlines set here, so a slow machine cannot fail it.
const PATIENCE: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection or answers; returns what it said.
async fn until_cut_off(mut s: TcpStream, mut drip: Option<&'static [u8]>) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        tokio::select! {
            n = s.read(&mut buf) => match n {
                Ok(0) | Err(_) => return got,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") {
                        return got;
                    }
                }
            },
            () = tokio::time::sleep(Duration::from_millis(200)), if drip.is_some() => {
                if s.write_all(drip.unwrap_or_default()).await.is_err() {
                    drip = None;
                }
            }
            () = tokio::time::sleep_until(deadline) => panic!("the server never cut this client off"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_and_idle_clients_are_cut_off_while_others_are_served() {
    let app = TestApp::spawn_with(
        RedisMode::Real,
        &[("HEADER_READ_TIMEOUT", "1s"), ("BODY_READ_TIMEOUT", "1s")],
    )
    .await;
    let campaign = app.campaign(100, 1).await;
    let mut abusers = Vec::new();
    for _ in 0..30 {
        let idle = TcpStream::connect(app.addr).await.unwrap();
        abusers.push(tokio::spawn(until_cut_off(idle, None)));

        let mut loris = TcpStream::connect(app.addr).await.unwrap();
        loris
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\n")
            .await
            .unwrap();
        abusers.push(tokio::spawn(until_cut_off(loris, Some(b"X-Slow: 1\r\n"))));
    }
    let mut bodies = Vec::new();
    let keys: Vec<String> = (0..10).map(|n| unique(&format!("slow-body-{n}"))).collect();
    for key in &keys {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        let head = format!(
            "POST /v1/admin/campaigns HTTP/1.1\r\nHost: voucherd\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Idempotency-Key: {key}\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
        );
        s.write_all(head.as_bytes()).await.unwrap();
        bodies.push(tokio::spawn(until_cut_off(s, Some(b" "))));
    }

    // While all of them hold connections, a new user is accepted and served: on a
    // connection of its own, not one the test's client already has open.
    let newcomer = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let resp = newcomer
        .post(app.url(&format!("/v1/campaigns/{campaign}/claims")))
        .bearer_auth(token(&unique("patient")))
        .header("Idempotency-Key", unique("k"))
        .send()
        .await
        .expect("a new client was not served while the slow ones held connections");
    assert_eq!(resp.status(), StatusCode::CREATED);

    for a in abusers {
        let said = a.await.unwrap();
        // Closed without a request ever being handled (hyper may say 408 first).
        assert!(
            said.is_empty() || said.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&said)
        );
    }
    for b in bodies {
        let said = String::from_utf8(b.await.unwrap()).unwrap();
        assert!(said.starts_with("HTTP/1.1 408"), "{said}");
        assert!(said.contains("application/problem+json"), "{said}");
    }
    // A timed-out body recorded nothing: its key still creates a campaign, fresh.
    for key in &keys {
        let resp = app
            .admin_post("/v1/admin/campaigns", key, &campaign_body(10, 1))
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert!(resp.headers().get("idempotent-replayed").is_none());
    }
    app.assert_invariants(&campaign).await;
}

/// A client that sends requests and never reads the answers (here: pipelined
/// requests for the 4.9 MB docs bundle) cannot hold its connection slot for ever: a
/// write that makes no progress for `HEADER_READ_TIMEOUT` drops the connection, and
/// with one slot in all, the next client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_its_answers_is_cut_off() {
    let app = TestApp::spawn_with(
        RedisMode::None,
        &[("HEADER_READ_TIMEOUT", "1s"), ("MAX_CONNECTIONS", "1")],
    )
    .await;
    let mut stuck = TcpStream::connect(app.addr).await.unwrap();
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: voucherd\r\n\r\n",
        "/docs/assets/scalar-1.76.4/standalone.js"
    );
    for _ in 0..4 {
        stuck.write_all(request.as_bytes()).await.unwrap();
    }
    // The slot is taken; the next client is served once the stuck one is dropped.
    let served = tokio::time::timeout(PATIENCE, async {
        let mut next = TcpStream::connect(app.addr).await.unwrap();
        next.write_all(b"GET /healthz HTTP/1.1\r\nHost: voucherd\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = next.read_to_end(&mut answer).await;
        answer
    })
    .await
    .expect("a client that never reads held the only connection slot");
    assert!(
        served.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&served[..served.len().min(200)])
    );
    drop(stuck);
}
