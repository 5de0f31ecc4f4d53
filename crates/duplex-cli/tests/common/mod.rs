//! What the `duplex` binary's test files share: the binary, and a server
//! started from it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

/// The `duplex` binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// `duplex serve` on a free loopback port with extra flags; returns the
/// child and its address. `scheme` is what it announces (http or https).
pub fn serve_with(extra: &[&str], scheme: &str) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        if let Some(rest) = line.split(&format!("listening on {scheme}://")).nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    // Keep draining the log so the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if std::env::var_os("DUPLEX_TEST_SERVER_LOG").is_some() {
                eprintln!("server: {l}");
            }
        }
    });
    (child, addr)
}
