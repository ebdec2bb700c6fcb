//! One integration-test binary (linked once) driving a real voucherd over HTTP
//! against real Postgres and Redis.

mod cache;
mod checkout;
mod exports;
mod faults;
mod gauges;
mod grab;
mod helpers;
mod http_layer;
mod idempotency;
mod input;
mod launch;
mod lifecycle;
mod live;
mod ops;
mod replica;
mod slow_clients;
mod support;
mod webhooks;
