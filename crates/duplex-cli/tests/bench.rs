//! `duplex bench` against a real `duplex serve` on loopback. These check
//! that every mode runs, verifies what it receives and prints a valid JSON
//! line; they assert no timing.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_duplex");

/// Starts `duplex serve` on a free port; returns the child and its address.
fn serve() -> (Child, String) {
    serve_with(&["--no-deflate"])
}

/// `duplex serve` on a free port with these further arguments.
fn serve_with(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("serve exited early").unwrap();
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Runs `duplex bench ARGS`; returns the parsed JSON line (the last line of
/// stdout) after checking the exit status and the human line before it.
fn bench(args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).arg("bench").args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "one human line and one JSON line: {stdout}");
    serde_json::from_str(lines[1]).unwrap_or_else(|e| panic!("{e}: {}", lines[1]))
}

#[test]
fn echo_verifies_every_message_and_reports_server_cpu() {
    let (mut server, addr) = serve();
    let pid = server.id().to_string();
    let url = format!("ws://{addr}/echo");
    for (size, text, depth) in [
        ("20", true, "1"),
        ("20", false, "16"),
        ("70000", false, "2"),
    ] {
        let mut args = vec![
            "echo",
            &url,
            "-c",
            "3",
            "--depth",
            depth,
            "--size",
            size,
            "--duration",
            "0.3",
            "--warmup",
            "0.1",
            "--server-pid",
            &pid,
            "--label",
            "duplex",
        ];
        if text {
            args.push("--text");
        }
        let j = bench(&args);
        assert_eq!(j["mode"], "echo");
        assert_eq!(j["label"], "duplex");
        assert_eq!(j["errors"], 0);
        assert!(j["messages"].as_u64().unwrap() > 0, "{j}");
        assert!(j["msgs_per_s"].as_f64().unwrap() > 0.0);
        assert!(j["p50_us"].as_f64().unwrap() <= j["p99_us"].as_f64().unwrap());
        assert!(j["server_cpu_us_per_msg"].is_number(), "{j}");
        assert!(j["server_rss_bytes"].as_f64().unwrap() > 0.0);
    }
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn echo_against_a_raw_tcp_echo_expects_its_own_masked_frames() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { return };
            std::thread::spawn(move || {
                let mut back = tcp.try_clone().unwrap();
                let _ = std::io::copy(&mut tcp, &mut back);
            });
        }
    });
    let url = format!("ws://{addr}/");
    let j = bench(&[
        "echo",
        &url,
        "--raw-tcp-peer",
        "-c",
        "2",
        "--depth",
        "4",
        "--size",
        "300",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
    ]);
    assert_eq!(j["raw_tcp_peer"], true);
    assert_eq!(j["errors"], 0);
    assert!(j["messages"].as_u64().unwrap() > 0, "{j}");
    // Without the flag, the masked frames coming back are an error.
    let out = Command::new(BIN)
        .args([
            "bench",
            "echo",
            &url,
            "-c",
            "1",
            "--duration",
            "0.2",
            "--warmup",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

#[test]
fn idle_holds_connections_and_reports_memory_per_connection() {
    let (mut server, addr) = serve();
    let pid = server.id().to_string();
    let url = format!("ws://{addr}/echo");
    let j = bench(&[
        "idle",
        &url,
        "-c",
        "50",
        "--duration",
        "0.2",
        "--server-pid",
        &pid,
        "--deflate",
    ]);
    assert_eq!(j["mode"], "idle");
    assert_eq!(j["opened"], 50);
    assert_eq!(j["errors"], 0);
    // The server runs with --no-deflate: offered, never agreed.
    assert_eq!(j["deflate_offered"], true);
    assert_eq!(j["deflate_negotiated"], 0);
    assert!(j["rss_bytes_per_conn"].is_number(), "{j}");
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn handshake_counts_complete_upgrade_and_close_cycles() {
    let (mut server, addr) = serve();
    let pid = server.id().to_string();
    let url = format!("ws://{addr}/echo");
    let j = bench(&[
        "handshake",
        &url,
        "-c",
        "2",
        "--duration",
        "0.3",
        "--warmup",
        "0.1",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(j["mode"], "handshake");
    assert_eq!(j["errors"], 0);
    assert!(j["handshakes"].as_u64().unwrap() > 0, "{j}");
    // A path the server does not serve is refused, and reported as such.
    let out = Command::new(BIN)
        .args([
            "bench",
            "handshake",
            &format!("ws://{addr}/nope"),
            "-c",
            "1",
        ])
        .args(["--duration", "0.2", "--warmup", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("404"));
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The configuration bench/README.md documents for the broadcast benchmark.
const BROADCAST_CONFIG: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../bench/duplex-broadcast.toml"
);

#[test]
fn broadcast_delivers_every_publication_to_every_subscriber_in_order() {
    let (mut server, addr) = serve_with(&["--config", BROADCAST_CONFIG]);
    let pid = server.id().to_string();
    let url = format!("ws://{addr}/connection/websocket");
    let short = ["--duration", "0.3", "--warmup", "0.1", "--hold", "0.1"];
    let j = bench(
        &[
            &["broadcast", &url, "-c", "20", "--window", "4"][..],
            &short,
            &["--server-pid", &pid, "--label", "duplex"],
        ]
        .concat(),
    );
    assert_eq!(j["mode"], "broadcast");
    assert_eq!(j["label"], "duplex");
    assert_eq!(j["protocol"], "centrifuge");
    assert_eq!(j["subscribed"], 20);
    assert_eq!(j["size"], 100);
    assert_eq!(j["errors"], 0, "{j}");
    assert_eq!(j["lost"], 0);
    assert_eq!(j["complete"], true);
    assert!(j["publications"].as_u64().unwrap() > 0, "{j}");
    assert!(j["deliveries"].as_u64().unwrap() > 0, "{j}");
    assert!(j["deliveries_per_s"].as_f64().unwrap() > 0.0);
    assert!(j["p50_us"].as_f64().unwrap() <= j["p99_us"].as_f64().unwrap());
    assert!(j["server_cpu_us_per_delivery"].is_number(), "{j}");
    assert!(j["rss_bytes_per_conn"].is_number(), "{j}");
    // A fixed rate, and a larger payload.
    let j = bench(
        &[
            &[
                "broadcast",
                &url,
                "-c",
                "5",
                "--rate",
                "200",
                "--size",
                "1KiB",
            ][..],
            &short,
        ]
        .concat(),
    );
    assert_eq!(
        (j["errors"].as_u64(), j["lost"].as_u64()),
        (Some(0), Some(0))
    );
    let rate = j["publications_per_s"].as_f64().unwrap();
    assert!(rate > 100.0 && rate < 300.0, "{j}");
    // The wrong API key: every publication is refused, and that is an error.
    let out = Command::new(BIN)
        .args(["bench", "broadcast", &url, "-c", "2", "--api-key", "nope"])
        .args(short)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("401"));
    server.kill().unwrap();
    server.wait().unwrap();
}

#[test]
fn broadcast_against_a_raw_tcp_fan_out() {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    // Whatever one connection sends goes to every other one.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let conns: Arc<Mutex<Vec<(usize, TcpStream)>>> = Arc::default();
    std::thread::spawn(move || {
        for (me, tcp) in listener.incoming().enumerate() {
            let Ok(mut tcp) = tcp else { return };
            conns.lock().unwrap().push((me, tcp.try_clone().unwrap()));
            let conns = conns.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = tcp.read(&mut buf) {
                    for (id, c) in conns.lock().unwrap().iter_mut() {
                        if *id != me {
                            let _ = c.write_all(&buf[..n]);
                        }
                    }
                }
            });
        }
    });
    let url = format!("ws://{addr}/");
    let args = [
        "broadcast",
        &url,
        "--raw-tcp-peer",
        "-c",
        "4",
        "--hold",
        "0",
    ];
    let j = bench(&[&args[..], &["--duration", "0.3", "--warmup", "0.1"]].concat());
    assert_eq!(j["protocol"], "raw-tcp");
    assert_eq!(
        (j["errors"].as_u64(), j["lost"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(j["deliveries"].as_u64().unwrap() > 0, "{j}");
}
