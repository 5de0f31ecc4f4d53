//! Replays the seed corpora of the server's fuzz targets
//! (`fuzz/corpus/<target>/`) through their bodies in
//! `duplex_server::fuzzing`, so every seed — and every crash the fuzzer once
//! found, added there as a seed — is an ordinary test.

use duplex_server::fuzzing;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// Runs every file of the target's corpus through `f`, reporting all the
/// files that fail rather than only the first.
fn replay(target: &str, f: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        files.len() >= 3,
        "{}: only {} seed files",
        dir.display(),
        files.len()
    );
    let mut failed = Vec::new();
    for path in &files {
        let data = std::fs::read(path).expect("readable seed");
        if catch_unwind(AssertUnwindSafe(|| f(&data))).is_err() {
            failed.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    assert!(failed.is_empty(), "{target}: seeds failing: {failed:?}");
}

#[test]
fn request_route_corpus() {
    replay("request_route", fuzzing::request_route);
}

#[test]
fn centrifuge_command_corpus() {
    replay("centrifuge_command", fuzzing::centrifuge_command);
}

#[test]
fn centrifuge_protobuf_corpus() {
    replay("centrifuge_protobuf", fuzzing::centrifuge_protobuf);
}

#[test]
fn jwt_corpus() {
    replay("jwt", fuzzing::jwt);
}

#[test]
fn sse_last_event_id_corpus() {
    replay("sse_last_event_id", fuzzing::sse_last_event_id);
}

#[test]
fn config_toml_corpus() {
    replay("config_toml", fuzzing::config_toml);
}

/// The JWT seeds that should be accepted are: the harness signs what the
/// fuzzer writes, so the target reaches the claims checks and not only
/// signature refusals.
#[test]
fn jwt_seeds_reach_acceptance() {
    let auth = duplex_server::auth::Auth::new(duplex_server::auth::AuthConfig {
        hmac_secret: Some(fuzzing::JWT_SECRET.into()),
        leeway: duplex_server::auth::DEFAULT_LEEWAY,
        max_token_size: duplex_server::auth::DEFAULT_MAX_TOKEN_SIZE,
        ..Default::default()
    })
    .unwrap();
    let (token, _) = fuzzing::jwt_token(br#"0{"sub":"alice","channels":["news"]}"#);
    assert_eq!(auth.verify_connect(&token).unwrap().sub, "alice");
    let (forged, _) = fuzzing::jwt_token(br#"2{"sub":"alice"}"#);
    assert!(auth.verify_connect(&forged).is_err());
    assert_eq!(
        fuzzing::base64url(b"any carnal pleas"),
        "YW55IGNhcm5hbCBwbGVhcw"
    );
    assert_eq!(fuzzing::base64url(b"\xfb\xff"), "-_8");
}
