//! The HTTP server loop: a cap on open connections, a deadline for request heads, a
//! check of every head before hyper parses it (`head`), an honest `Connection`
//! header on every answer (`keep_alive`) and a drain on shutdown, so slow, idle or
//! malformed clients cannot starve everyone else or get an answer in another shape.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use crate::{config::Settings, head, keep_alive};

/// How much of the server one client, or many, may hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections open at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// From a connection's first byte of a request head (or from the end of the
    /// previous response, for a kept-alive connection) to the end of that head.
    /// A slowloris client, or an idle kept-alive one, is closed after it.
    pub header_read_timeout: Duration,
    /// How long the unread rest of a small request body may take to arrive after
    /// an early answer before its connection is closed instead (`BODY_READ_TIMEOUT`).
    pub body_read_timeout: Duration,
    /// How long a shutdown waits for in-flight requests before closing them.
    pub drain: Duration,
}

/// How long a shutdown lets in-flight requests finish.
const DRAIN: Duration = Duration::from_secs(10);

impl ServerLimits {
    pub fn from_settings(settings: &Settings) -> Self {
        ServerLimits {
            max_connections: settings.max_connections,
            header_read_timeout: settings.header_read_timeout,
            body_read_timeout: settings.body_read_timeout,
            drain: DRAIN,
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish (up to `limits.drain`).
pub async fn run(
    listener: TcpListener,
    app: Router,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(head::MAX_HEADERS);
    // Each connection holds a receiver until it ends: a send asks them all to close
    // gracefully, and the sender's `closed` is the moment the last one has.
    let (stop, _) = watch::channel(());
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: neither is fatal, and retrying at once would spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let (guarded, refused) = head::HeadGuard::new(stream, limits.header_read_timeout);
        let app = app.clone();
        let drain = limits.body_read_timeout;
        let service = service_fn(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let app = app.clone();
            async move { Ok::<_, Infallible>(keep_alive::serve(app, req, drain).await) }
        });
        let conn = builder.serve_connection(TokioIo::new(guarded), service);
        let mut stopping = stop.subscribe();
        metrics::gauge!("voucherd_http_connections").increment(1);
        tokio::spawn(async move {
            tokio::pin!(conn);
            let mut closing = false;
            // A graceful shutdown lets hyper answer the request in flight (saying
            // `Connection: close`) and then close; for a refused head, the guard
            // writes its answer as hyper closes.
            let ended = loop {
                tokio::select! {
                    ended = conn.as_mut() => break ended,
                    () = refused.notified(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    _ = stopping.changed(), if !closing => {
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            metrics::gauge!("voucherd_http_connections").decrement(1);
            drop(stopping);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop.send(());
    tokio::select! {
        () = stop.closed() => {}
        () = tokio::time::sleep(limits.drain) => {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpStream,
        sync::{Notify, oneshot},
    };

    /// A shutdown stops accepting, lets the request in flight finish, closes its
    /// connection and then returns.
    #[tokio::test]
    async fn a_shutdown_lets_the_request_in_flight_finish() {
        let (started, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
        let (s, r) = (started.clone(), release.clone());
        let app = Router::new().route(
            "/slow",
            get(move || async move {
                s.notify_one();
                r.notified().await;
                "done"
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = ServerLimits {
            max_connections: 8,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            drain: Duration::from_secs(30),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(run(listener, app, limits, async {
            let _ = stopped.await;
        }));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        started.notified().await;
        stop.send(()).unwrap();
        release.notify_one();
        let mut said = Vec::new();
        client.read_to_end(&mut said).await.unwrap();
        let said = String::from_utf8(said).unwrap();
        assert!(said.starts_with("HTTP/1.1 200 OK\r\n"), "{said}");
        assert!(said.ends_with("\r\n\r\ndone"), "{said}");
        tokio::time::timeout(Duration::from_secs(30), server)
            .await
            .expect("the server did not return after draining")
            .unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
