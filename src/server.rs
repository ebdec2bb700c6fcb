//! The HTTP server loop: a cap on open connections, a deadline for request heads and
//! a drain on shutdown, so slow or idle clients cannot starve everyone else.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{ConnectInfo, Request},
};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;

use crate::config::Settings;

/// How much of the server one client, or many, may hold.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Connections open at once; past it, new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// From a connection's first byte of a request head (or from the end of the
    /// previous response, for a kept-alive connection) to the end of that head.
    /// A slowloris client, or an idle kept-alive one, is closed after it.
    pub header_read_timeout: Duration,
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
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
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
        let service = app.clone().map_request(move |mut req: Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            req
        });
        let conn =
            builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        metrics::gauge!("voucherd_http_connections").increment(1);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            metrics::gauge!("voucherd_http_connections").decrement(1);
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain) => {
            tracing::warn!("drain deadline passed; closing remaining connections");
        }
    }
}
