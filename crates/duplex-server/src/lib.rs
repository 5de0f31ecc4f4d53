//! `duplex-server`: the ready-to-run Duplex server.
//!
//! The echo service at `/echo`, the real-time hub (channels, history,
//! recovery, presence) behind the Centrifugo client protocol at
//! `/connection/websocket` and the server HTTP API at `/api/<method>`,
//! Prometheus metrics at `/metrics`, the echo tester page at `/`; an Origin
//! policy, TLS on the same port, a connection limit and graceful shutdown.
//! It uses the `duplex` library like any other application.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod alarms;
pub mod app;
pub mod auth;
pub mod broker;
pub mod config;
pub mod config_file;
pub mod echo;
pub mod error;
pub mod front;
#[cfg(feature = "test-support")]
pub mod fuzzing;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod per_ip;
pub mod router;
pub mod server;
pub mod shared_tcp;
pub mod shutdown;
pub mod tls;
pub mod web;

pub use config::ServerConfig;
pub use error::Error;
pub use server::Server;
