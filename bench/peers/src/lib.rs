//! Shared by the peer echo servers: the listen address from the command line.

use std::net::SocketAddr;

/// The first argument as a socket address, or 127.0.0.1:9001.
pub fn listen_addr() -> SocketAddr {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9001".into());
    match arg.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "usage: {} LISTEN_ADDR ({arg}: {e})",
                std::env::args().next().unwrap_or_default()
            );
            std::process::exit(2);
        }
    }
}
