//! `duplex-server`: the ready-to-run Duplex server.
//!
//! Today: the echo service at `/echo` (permessage-deflate accepted, limits
//! from [`ServerConfig`]), the browser echo tester at `/`, 404 elsewhere;
//! an Origin policy and subprotocol choice, TLS on the same port, a
//! connection limit and graceful shutdown. It uses the `duplex` library
//! like any other application.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod broker;
pub mod config;
pub mod echo;
pub mod hub;
pub mod metrics;
pub mod server;
pub mod shutdown;
pub mod tls;
pub mod web;

pub use config::ServerConfig;
pub use server::Server;
