//! Fuzz-target bodies for the server's parsers of untrusted input, shared by
//! the cargo-fuzz targets in `fuzz/` and by the test that replays their seed
//! corpora (`tests/fuzz_corpus.rs`). Compiled only with the `test-support`
//! feature, like `duplex_proto::fuzzing`.
//!
//! Each function takes arbitrary bytes, runs them through the parser the
//! server runs on what a peer (or, for the configuration file, an operator)
//! sends, and asserts what must hold for every input: no panic, and the
//! consistency properties its documentation names. A failed assertion (a
//! panic) is a bug in the server, not in the input.
//!
//! | function | exercises |
//! | --- | --- |
//! | [`request_route`] | a request head as the first read parses it, routed by [`route`] |
//! | [`centrifuge_command`] | a text frame of Centrifugo JSON commands, decoded line by line |
//! | [`jwt`] | [`Auth::verify_connect`] and [`Auth::verify_subscription`] |
//! | [`sse_last_event_id`] | the SSE query string and its `Last-Event-ID` / `since` positions |
//! | [`config_toml`] | [`config_file::apply`] on a TOML file |
//!
//! Every function is deterministic except [`jwt`], whose time checks read
//! the clock (with a second of slack either side).

use crate::auth::{Auth, AuthConfig, TokenError, DEFAULT_LEEWAY};
use crate::config::ServerConfig;
use crate::config_file;
use crate::error::Error;
use crate::front::centrifuge::wire;
use crate::front::sse;
use crate::router::{route, Route, CENTRIFUGE_PATH};
use duplex_proto::handshake::server::parse_request;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;
use std::sync::OnceLock;

// ------------------------------------------------------------ request head

/// Parses `data` as an HTTP/1.1 request head with the parser the server's
/// first read uses (`duplex_proto::handshake::server::parse_request`,
/// httparse underneath, with the default limits; an incomplete head is
/// completed with an empty line), and routes it with [`route`]. The first
/// line as written (method and target split at spaces) is routed too, so
/// that the router sees what httparse refuses.
///
/// Asserts, for the head: it ends within the input and the size limit, and
/// parsing just its bytes gives the same request; the path is the target up
/// to its first `?`. For an origin-form target (`/…`) that the `http` crate
/// also accepts — hyper routes every later request on a connection, and
/// the first one unless it opens a WebSocket, by `Uri::path` — both give
/// the same path, so the same route, and the same query. A `#fragment`,
/// which httparse keeps in the path and `http` drops, is the exception:
/// there only a WebSocket route of the first read must be hyper's too. An SSE route's query and
/// `Last-Event-ID` go through the checks of [`sse_last_event_id`].
///
/// Asserts, for every route: `NotFound` does not depend on the method; a
/// `405`'s `Allow` list excludes the method and names only methods that
/// are routed; each route is reached only by its path and methods (`Api`
/// only by `POST /api/<name>`, a WebSocket only by `GET`); `HEAD` routes
/// as `GET` except to a WebSocket.
pub fn request_route(data: &[u8]) {
    let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(data.len());
    let line = String::from_utf8_lossy(&data[..line_end]);
    let mut words = line.trim_end_matches('\r').split(' ');
    if let (Some(method), Some(target)) = (words.next(), words.next()) {
        check_route(method, target.split('?').next().unwrap_or(""));
    }

    let cfg = duplex_proto::Config::default();
    let mut buf = data.to_vec();
    let (req, n) = match parse_request(&buf, &cfg) {
        Ok(Some(r)) => r,
        Ok(None) => {
            buf.extend_from_slice(b"\r\n\r\n");
            match parse_request(&buf, &cfg) {
                Ok(Some(r)) => r,
                _ => return,
            }
        }
        Err(_) => return,
    };
    assert!(
        n <= buf.len() && n <= cfg.max_handshake_bytes,
        "head of {n} bytes"
    );
    assert_eq!(
        parse_request(&buf[..n], &cfg),
        Ok(Some((req.clone(), n))),
        "the head alone parses differently"
    );
    let path = req.path();
    assert!(
        req.target.starts_with(path) && !path.contains('?'),
        "path {path:?} of {:?}",
        req.target
    );
    let r = check_route(&req.method, path);

    if req.target.starts_with('/') {
        if let Ok(uri) = http::Uri::try_from(req.target.as_str()) {
            let (before_fragment, fragment) = match req.target.split_once('#') {
                Some((b, _)) => (b, true),
                None => (req.target.as_str(), false),
            };
            let query = before_fragment.split_once('?').map(|(_, q)| q);
            assert_eq!(uri.query(), query, "query of {:?}", req.target);
            let hyper_route = route(&req.method, uri.path());
            if fragment {
                // The first read only decides whether a WebSocket is opened
                // here; everything else hyper routes again by `Uri::path`.
                if matches!(r, Route::Echo | Route::Centrifuge) {
                    assert_eq!(r, hyper_route, "{:?}", req.target);
                }
            } else {
                assert_eq!(uri.path(), path, "path of {:?}", req.target);
                assert_eq!(r, hyper_route);
            }
        }
    }

    if r == Route::Sse {
        let query = req.target.split_once('?').map_or("", |(_, q)| q);
        let request = check_query(query);
        if let Some(id) = req
            .headers
            .get("last-event-id")
            .or(request.since.as_deref())
        {
            check_positions(id, request.channels.len().max(1));
        }
    }
}

/// Routes `method` and `path` and checks the route (see [`request_route`]).
fn check_route(method: &str, path: &str) -> Route {
    let r = route(method, path);
    let get = route("GET", path);
    assert_eq!(
        r == Route::NotFound,
        get == Route::NotFound,
        "{method} {path:?}: {r:?}, GET: {get:?}"
    );
    let get_or_head = method == "GET" || method == "HEAD";
    match &r {
        Route::NotFound => {}
        Route::MethodNotAllowed(allow) => {
            for m in allow.split(", ") {
                assert_ne!(m, method, "{path:?}: {method} is refused yet allowed");
                let ok = route(m, path);
                assert!(
                    !matches!(ok, Route::MethodNotAllowed(_) | Route::NotFound),
                    "{path:?}: Allow names {m}, which is routed to {ok:?}"
                );
            }
        }
        Route::Page => assert!(get_or_head && (path == "/" || path == "/index.html")),
        Route::Asset(p) => {
            assert!(get_or_head && *p == path, "{method} {path:?}: {r:?}");
            assert!(crate::web::asset(path).is_some());
        }
        Route::Metrics => assert!(get_or_head && path == "/metrics"),
        Route::Health => assert!(get_or_head && path == "/health"),
        Route::Sse => assert!(get_or_head && path == sse::SSE_PATH),
        Route::Echo => assert!(method == "GET" && path == "/echo"),
        Route::Centrifuge => assert!(method == "GET" && path == CENTRIFUGE_PATH),
        Route::Api(name) => {
            assert_eq!(method, "POST");
            assert_eq!(path.strip_prefix("/api/"), Some(name.as_str()));
            assert!(!name.is_empty() && !name.contains('/'), "{r:?}");
        }
    }
    let head = route("HEAD", path);
    match get {
        Route::Echo | Route::Centrifuge => assert_eq!(head, Route::MethodNotAllowed("GET")),
        g => assert_eq!(head, g, "{path:?}: HEAD and GET differ"),
    }
    r
}

// ------------------------------------------------------ Centrifugo commands

/// Lines of one frame the harness decodes (the front's own limit,
/// `max_commands_per_frame`, is 100 by default; a frame longer than that
/// disconnects before its extra lines are decoded).
const MAX_COMMAND_LINES: usize = 100;

/// Decodes `data`, a text frame of the Centrifugo JSON protocol, as the
/// WebSocket front does: split at `\n`, blank lines skipped, each line one
/// [`wire::Command`]. Input that is not UTF-8 is ignored (a text frame
/// always is).
///
/// Asserts, for every line that decodes: it is valid JSON, and the command
/// says what that JSON says — the `id` (0 when absent), which requests are
/// present (non-null), their channel, token, offset and epoch fields. serde
/// also decodes a struct from a JSON array, field by field in declaration
/// order; the comparison follows that too. Then, on the way out: each
/// decoded string written by [`wire::string`] reads back as itself;
/// [`wire::Disconnect::custom`] cuts a reason to at most 123 bytes at a
/// character boundary and no shorter than it must; and the error replies
/// written for every command of the frame read back as one JSON object per
/// line, carrying each command's id in order.
pub fn centrifuge_command(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut out = String::new();
    let mut ids = Vec::new();
    let lines = text.split('\n').filter(|l| !l.trim().is_empty());
    for line in lines.take(MAX_COMMAND_LINES) {
        let Ok(cmd) = serde_json::from_str::<wire::Command>(line) else {
            continue;
        };
        if let Some(v) = json_value(line.as_bytes()) {
            assert!(v.is_object() || v.is_array(), "a command from {v}");
            check_command(&cmd, &v);
        }
        wire::error(&mut out, cmd.id, wire::BAD_REQUEST);
        ids.push(cmd.id);
    }
    let replies: Vec<Value> = if out.is_empty() {
        Vec::new()
    } else {
        out.split('\n')
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("reply {l:?}: {e}")))
            .collect()
    };
    let reply_ids: Vec<u64> = replies.iter().filter_map(|r| r["id"].as_u64()).collect();
    let ids: Vec<u64> = ids.into_iter().map(u64::from).collect();
    assert_eq!(reply_ids, ids, "replies {out:?}");
}

/// Decodes `data`, a binary frame of the Centrifugo Protobuf protocol
/// (`centrifuge-protobuf`: length-delimited `Command`s), as the WebSocket
/// front does.
///
/// Asserts: the front's streaming decoder ([`proto::Commands`]) and
/// [`proto::decode`] agree command by command, the stream stopping at the
/// first malformed one, which makes the whole frame malformed; a frame that
/// decodes holds no more commands than bytes; each command reads back the
/// same after being written again; an empty `publish` payload is no payload
/// (Protobuf cannot tell them apart); and the error replies written for
/// every command of the frame read back as length-delimited replies
/// carrying each command's id in order.
pub fn centrifuge_protobuf(data: &[u8]) {
    use crate::front::centrifuge::proto::{self, pb};
    use prost::Message as _;
    let streamed: Vec<_> = proto::Commands::new(bytes::Bytes::copy_from_slice(data)).collect();
    let Ok(commands) = proto::decode(data) else {
        assert!(
            matches!(streamed.last(), Some(Err(_))),
            "decode refused a frame the stream took whole"
        );
        assert!(streamed[..streamed.len() - 1].iter().all(Result::is_ok));
        return;
    };
    assert!(commands.len() <= data.len());
    assert_eq!(streamed.len(), commands.len());
    let mut rest = data;
    let mut out = Vec::new();
    for (c, s) in commands.iter().zip(&streamed) {
        let s = s.as_ref().expect("the stream agrees");
        assert_eq!((c.id, c.publish.is_some()), (s.id, s.publish.is_some()));
        if let Some(p) = &c.publish {
            assert!(p.data.as_ref().map_or(true, |d| !d.is_empty()));
        }
        // The same message, written again by prost, reads back the same.
        let m = pb::Command::decode_length_delimited(&mut rest).expect("decoded above");
        let again = pb::Command::decode(m.encode_to_vec().as_slice()).expect("re-encoded");
        assert_eq!(m, again);
        proto::error(&mut out, c.id, wire::BAD_REQUEST);
    }
    assert!(rest.is_empty(), "the commands took the whole frame");
    let mut replies = out.as_slice();
    let mut ids = Vec::new();
    while !replies.is_empty() {
        let r = pb::Reply::decode_length_delimited(&mut replies).expect("a reply");
        assert!(r.error.is_some());
        ids.push(r.id);
    }
    assert_eq!(ids, commands.iter().map(|c| c.id).collect::<Vec<_>>());
}

/// `text` as a [`Value`], to compare with what a typed decoder read from it.
/// `None` where `Value` refuses what the typed decoder's skipping of the
/// fields it ignores accepts (a number beyond `f64`, a lone surrogate
/// escape in a skipped string), after checking that skipping the whole
/// text, as [`serde::de::IgnoredAny`], succeeds. Invalid UTF-8 is replaced first, which changes no field a
/// decoder accepted as a string.
fn json_value(text: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(text);
    match serde_json::from_str(&text) {
        Ok(v) => Some(v),
        Err(why) => {
            serde_json::from_str::<serde::de::IgnoredAny>(&text)
                .unwrap_or_else(|e| panic!("decoded, yet not JSON ({e}; {why}): {text:?}"));
            None
        }
    }
}

/// Field `name` of a struct decoded from `v`, or element `index` when `v` is
/// an array (serde's sequence form of a struct).
fn field<'v>(v: &'v Value, index: usize, name: &str) -> Option<&'v Value> {
    match v {
        Value::Array(a) => a.get(index),
        v => v.get(name),
    }
}

/// A request field decoded as `Option<T>`: present and not `null`.
fn present(v: &Value, index: usize, name: &str) -> bool {
    field(v, index, name).is_some_and(|f| !f.is_null())
}

/// Checks that a `String` field decoded from `v` is `got`, and that the
/// string survives the way out.
fn check_str(v: &Value, index: usize, name: &str, got: &str) {
    let want = field(v, index, name).map_or("", |f| f.as_str().expect("a string field"));
    assert_eq!(got, want, "field {name} of {v}");
    check_string_out(got);
}

fn check_u64(v: &Value, index: usize, name: &str, got: u64) {
    let want = field(v, index, name).map_or(0, |f| f.as_u64().expect("an unsigned field"));
    assert_eq!(got, want, "field {name} of {v}");
}

/// A string as the server writes it back: JSON that reads back as itself,
/// and as a close reason, cut to what a close frame holds.
fn check_string_out(s: &str) {
    let mut out = String::new();
    wire::string(&mut out, s);
    let back: String = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{out:?}: {e}"));
    assert_eq!(back, s);
    let d = wire::Disconnect::custom(4000, s);
    let reason: &str = &d.reason;
    assert!(
        reason.len() <= 123 && s.starts_with(reason) && reason.len() + 3 >= s.len().min(123),
        "reason {reason:?} of {s:?}"
    );
}

/// The fields every version of the command structs has, in their
/// declaration order (which the array form follows).
fn check_command(cmd: &wire::Command, v: &Value) {
    check_u64(v, 0, "id", u64::from(cmd.id));
    let requests = [
        (cmd.connect.is_some(), 1, "connect"),
        (cmd.subscribe.is_some(), 2, "subscribe"),
        (cmd.unsubscribe.is_some(), 3, "unsubscribe"),
        (cmd.publish.is_some(), 4, "publish"),
        (cmd.presence.is_some(), 5, "presence"),
        (cmd.presence_stats.is_some(), 6, "presence_stats"),
        (cmd.history.is_some(), 7, "history"),
        (cmd.refresh.is_some(), 8, "refresh"),
        (cmd.sub_refresh.is_some(), 9, "sub_refresh"),
        (cmd.rpc.is_some(), 10, "rpc"),
        (cmd.send.is_some(), 11, "send"),
        (cmd.ping.is_some(), 12, "ping"),
    ];
    for (set, index, name) in requests {
        assert_eq!(set, present(v, index, name), "{name} of {v}");
    }
    let req = |index, name| field(v, index, name).expect("present");
    if let Some(c) = &cmd.connect {
        let r = req(1, "connect");
        check_str(r, 0, "token", &c.token);
        for (channel, s) in &c.subs {
            check_string_out(channel);
            check_string_out(&s.epoch);
        }
    }
    if let Some(s) = &cmd.subscribe {
        let r = req(2, "subscribe");
        check_str(r, 0, "channel", &s.channel);
        check_str(r, 1, "token", &s.token);
        check_u64(r, 4, "offset", s.offset);
        check_str(r, 5, "epoch", &s.epoch);
    }
    if let Some(c) = &cmd.unsubscribe {
        check_str(req(3, "unsubscribe"), 0, "channel", &c.channel);
    }
    if let Some(p) = &cmd.publish {
        check_str(req(4, "publish"), 0, "channel", &p.channel);
    }
    if let Some(c) = &cmd.presence {
        check_str(req(5, "presence"), 0, "channel", &c.channel);
    }
    if let Some(c) = &cmd.presence_stats {
        check_str(req(6, "presence_stats"), 0, "channel", &c.channel);
    }
    if let Some(h) = &cmd.history {
        check_str(req(7, "history"), 0, "channel", &h.channel);
    }
    if let Some(r) = &cmd.refresh {
        check_str(req(8, "refresh"), 0, "token", &r.token);
    }
    if let Some(s) = &cmd.sub_refresh {
        let r = req(9, "sub_refresh");
        check_str(r, 0, "channel", &s.channel);
        check_str(r, 1, "token", &s.token);
    }
}

// -------------------------------------------------------------------- JWT

/// The HS256 secret of [`jwt`]'s configurations.
pub const JWT_SECRET: &str = "fuzz-secret";
/// The audience [`jwt`] requires when flag `0x04` is set.
pub const JWT_AUDIENCE: &str = "duplex";
/// The issuer [`jwt`] requires when flag `0x04` is set.
pub const JWT_ISSUER: &str = "https://issuer.example";
/// The largest token [`jwt`] accepts when flag `0x08` is set (otherwise the
/// server's default, 8 KiB).
pub const JWT_SMALL_MAX: usize = 256;
/// The channel and user [`jwt`] asks a subscription token for.
pub const JWT_SUBSCRIPTION: (&str, &str) = ("news", "alice");

/// RS256 and ES256 public keys whose private halves nobody has: a token
/// that names these algorithms can only be refused.
const RSA_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAtCj6y4UhI1tJSWe/WN+V
Qps9z4PKidfj0NTrwAzL7oz2AE1fmgwsabCibUgkdDPIehpe+YlWDmo0NCnzJURf
Ir/wgbjO6sA7DMFyo8RS4oyl0uF4+qBjfsXnbGDm6AAv0rNYC9acJC5ajeP2TfiO
wzw8Rflisibn5FLojTcW4GogljQK041skjh27aBm0C1qMNo0yk4tXfRW5U7PczIj
82/obvSpnK40+a6tTHc8Sb3LZ0nnjCil/HXCjYrx9u2u7sGu13MhpWInISB3OUJg
+oeWUFl8rVvPrSz6qDMG5yerl+I4OQxOtEdhba6XJEBRXG/TrcTU6S0VexEWQ+M9
tQIDAQAB
-----END PUBLIC KEY-----
";
const EC_PUBLIC_KEY: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE6iMDpADTEDSkmfWdyQyNYln6fVt6
7UMAZyItqoPeYnPuSoinKJHCS4lqfsbZ/muPUqCPm3LPs8XfKPXMwdQCiA==
-----END PUBLIC KEY-----
";

/// The four configurations, by flags `0x04` (audience and issuer) and
/// `0x08` (small token limit).
fn jwt_auth(flags: u8) -> &'static Auth {
    static AUTH: OnceLock<Vec<Auth>> = OnceLock::new();
    let all = AUTH.get_or_init(|| {
        (0..4u8)
            .map(|i| {
                let strict = i & 1 != 0;
                Auth::new(AuthConfig {
                    hmac_secret: Some(JWT_SECRET.into()),
                    rsa_public_key: Some(RSA_PUBLIC_KEY.into()),
                    ecdsa_public_key: Some(EC_PUBLIC_KEY.into()),
                    audience: strict.then(|| JWT_AUDIENCE.into()),
                    issuer: strict.then(|| JWT_ISSUER.into()),
                    leeway: DEFAULT_LEEWAY,
                    max_token_size: if i & 2 != 0 {
                        JWT_SMALL_MAX
                    } else {
                        crate::auth::DEFAULT_MAX_TOKEN_SIZE
                    },
                    ..AuthConfig::default()
                })
                .expect("the fuzzing keys parse")
            })
            .collect()
    });
    &all[usize::from((flags >> 2) & 3)]
}

/// base64url without padding, as JWTs write their parts.
pub fn base64url(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// The HS256 signature of `message` under `secret`, base64url.
fn hs256(message: &str, secret: &str) -> String {
    jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(secret.as_bytes()),
        Algorithm::HS256,
    )
    .expect("HS256 signs")
}

/// The token [`jwt`] checks for its input, and the claims JSON it signed
/// (signed mode only). See [`jwt`] for the format.
pub fn jwt_token(data: &[u8]) -> (String, Option<Vec<u8>>) {
    let flags = data.first().copied().unwrap_or(0);
    let rest = data.get(1..).unwrap_or_default();
    if flags & 0x01 != 0 {
        return (String::from_utf8_lossy(rest).into_owned(), None);
    }
    let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
    };
    let message = format!("{}.{}", base64url(header), base64url(claims));
    let secret = if flags & 0x02 != 0 {
        "another-secret"
    } else {
        JWT_SECRET
    };
    let signature = hs256(&message, secret);
    (format!("{message}.{signature}"), Some(claims.to_vec()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Verifies a token as a connection token and as a subscription token for
/// [`JWT_SUBSCRIPTION`].
///
/// Byte 0 holds flags: `0x01` raw mode, where the rest (lossily UTF-8) is
/// the token; otherwise the rest is a JWT header's JSON, `\n`, and the
/// claims' JSON (no `\n`: all claims, under `{"alg":"HS256","typ":"JWT"}`),
/// which the harness encodes and signs with HS256 under [`JWT_SECRET`], or
/// under another secret with `0x02`. `0x04` requires [`JWT_AUDIENCE`] and
/// [`JWT_ISSUER`]; `0x08` limits tokens to [`JWT_SMALL_MAX`] bytes. The
/// server also holds an RS256 and an ES256 key, whose private halves nobody
/// has.
///
/// Asserts: "too large" exactly for tokens over the limit. A token is
/// accepted only if its header names HS256 and its signature is exactly
/// the HS256 signature of its first two parts under the secret; a refusal
/// about the claims (expired, not yet valid, audience, issuer) likewise
/// comes only after a genuine signature, and a genuine HS256 signature is
/// never called bad. Accepted claims say what the signed JSON says (`sub`,
/// `channels`, `exp`), are not expired beyond the leeway nor not yet valid,
/// carry the required audience and issuer (a token without them is
/// refused: corpus seed `jwt/audience-missing.txt`), and stop being accepted when a
/// character of the signature changes. An accepted subscription token is
/// for the channel and user asked.
pub fn jwt(data: &[u8]) {
    let flags = data.first().copied().unwrap_or(0);
    let auth = jwt_auth(flags);
    let (token, claims) = jwt_token(data);
    let max = auth.config().max_token_size;
    let before = unix_now();
    let connect = auth.verify_connect(&token);
    let (channel, user) = JWT_SUBSCRIPTION;
    let subscription = auth.verify_subscription(&token, channel, user);
    let after = unix_now();

    let too_large = TokenError::Invalid("too large");
    for r in [connect.as_ref().err(), subscription.as_ref().err()] {
        assert_eq!(
            r == Some(&too_large),
            token.len() > max,
            "{} bytes",
            token.len()
        );
    }
    let genuine = genuine_hs256(&token);
    for (what, r) in [
        ("connect", connect.as_ref().map(|_| ())),
        ("subscription", subscription.as_ref().map(|_| ())),
    ] {
        match r {
            Ok(()) => assert!(genuine, "{what} token accepted: {token:?}"),
            Err(TokenError::Expired)
            | Err(TokenError::Invalid(
                "not yet valid"
                | "wrong audience"
                | "wrong issuer"
                | "token is for another channel"
                | "token is for another user",
            )) => assert!(genuine, "{what}: {r:?} for a forged token {token:?}"),
            Err(TokenError::Invalid("bad signature")) => {
                assert!(
                    !genuine,
                    "{what}: a genuine signature called bad: {token:?}"
                )
            }
            Err(_) => {}
        }
    }
    let Ok(c) = &connect else {
        if let Ok(s) = &subscription {
            assert_eq!((s.channel.as_str(), s.sub.as_str()), (channel, user));
        }
        return;
    };
    if let Ok(s) = &subscription {
        assert_eq!((s.channel.as_str(), s.sub.as_str()), (channel, user));
        assert_eq!(s.sub, c.sub);
    }
    // The claims say what was signed.
    if let Some(v) = claims.and_then(|c| json_value(&c)) {
        assert_eq!(c.sub, v.get("sub").map_or("", |s| s.as_str().expect("sub")));
        let channels: Vec<&str> = v.get("channels").map_or(Vec::new(), |a| {
            let a = a.as_array().expect("channels");
            a.iter().map(|c| c.as_str().expect("a channel")).collect()
        });
        assert_eq!(c.channels, channels);
        assert_eq!(c.exp, v.get("exp").and_then(Value::as_u64));
        let leeway = auth.config().leeway.as_secs();
        if let Some(exp) = v.get("exp").and_then(Value::as_u64) {
            assert!(
                exp.saturating_add(leeway) + 1 >= before,
                "expired at {exp}, now {before}"
            );
        }
        if let Some(nbf) = v.get("nbf").and_then(Value::as_u64) {
            assert!(
                nbf <= after + leeway + 1,
                "not valid before {nbf}, now {after}"
            );
        }
        if auth.config().audience.is_some() {
            // A string, or a list of strings that holds it.
            let names = |claim: &Value, want: &str| {
                claim == want
                    || claim
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == want))
            };
            assert!(names(&v["iss"], JWT_ISSUER), "issuer of {v}");
            assert!(names(&v["aud"], JWT_AUDIENCE), "audience of {v}");
        }
    }
    // Any other signature is refused.
    let last = token
        .chars()
        .next_back()
        .expect("an accepted token is not empty");
    let stem = &token[..token.len() - last.len_utf8()];
    for replacement in ['A', 'Q', 'g', 'w', '-', '_'] {
        if replacement == last {
            continue;
        }
        let tampered = format!("{stem}{replacement}");
        assert!(
            auth.verify_connect(&tampered).is_err(),
            "accepted with its signature changed: {tampered:?}"
        );
    }
}

/// Whether `token` is `<header>.<payload>.<signature>` with a header naming
/// HS256 and the exact HS256 signature under [`JWT_SECRET`].
fn genuine_hs256(token: &str) -> bool {
    let Some((message, signature)) = token.rsplit_once('.') else {
        return false;
    };
    let hs = jsonwebtoken::decode_header(token).is_ok_and(|h| h.alg == Algorithm::HS256);
    hs && signature == hs256(message, JWT_SECRET)
}

// -------------------------------------------------------------------- SSE

/// Parses `data` as an SSE request's positions. Byte 0: the number of
/// channels, `1 + (byte & 7)`; the rest (lossily UTF-8) is read both as a
/// `Last-Event-ID` value for that many channels and as the query string of
/// `/connection/sse` (whose `since` is then read for its channels).
///
/// Asserts, for the query: writing what was read (every `channel`, the last
/// `token` and `since`) back as a query reads back the same. For the
/// positions: one per channel; either every entry is malformed-free and
/// there are exactly as many as channels (an entry is `-` for none, or
/// `<offset>:<epoch>` with a decimal offset and an ASCII alphanumeric
/// epoch, each position's text being exactly that entry), or nothing is
/// recovered; writing the positions and reading them back gives the same
/// positions, in no more bytes than were read.
pub fn sse_last_event_id(data: &[u8]) {
    let n = 1 + usize::from(data.first().copied().unwrap_or(0) & 7);
    let text = String::from_utf8_lossy(data.get(1..).unwrap_or_default());
    check_positions(&text, n);
    let request = check_query(&text);
    if let Some(since) = &request.since {
        check_positions(since, request.channels.len().max(1));
    }
}

fn check_query(query: &str) -> sse::Request {
    let r = sse::parse_query(query);
    let mut again = form_urlencoded::Serializer::new(String::new());
    for c in &r.channels {
        again.append_pair("channel", c);
    }
    if let Some(t) = &r.token {
        again.append_pair("token", t);
    }
    if let Some(s) = &r.since {
        again.append_pair("since", s);
    }
    let again = again.finish();
    assert_eq!(
        sse::parse_query(&again),
        r,
        "{query:?} written back as {again:?}"
    );
    r
}

fn check_positions(s: &str, n: usize) {
    let p = sse::parse_positions(s, n);
    assert_eq!(p.len(), n);
    if p.iter().any(Option::is_some) {
        let parts: Vec<&str> = s.split(',').collect();
        assert_eq!(parts.len(), n, "{s:?} for {n} channels");
        for (part, pos) in parts.iter().zip(&p) {
            match pos {
                None => assert_eq!(*part, "-"),
                Some(pos) => {
                    let (offset, epoch) = part.split_once(':').expect("offset:epoch");
                    assert_eq!(offset.parse::<u64>(), Ok(pos.offset), "{part:?}");
                    assert_eq!(epoch, &*pos.epoch, "{part:?}");
                    assert!(
                        !epoch.is_empty() && epoch.bytes().all(|b| b.is_ascii_alphanumeric()),
                        "epoch {epoch:?}"
                    );
                }
            }
        }
    }
    let written = sse::format_positions(&p);
    assert_eq!(
        sse::parse_positions(&written, n),
        p,
        "{s:?} written as {written:?}"
    );
    if p.iter().any(Option::is_some) {
        assert!(written.len() <= s.len(), "{s:?} written as {written:?}");
    }
}

// ----------------------------------------------------------------- config

/// Applies `data` as a configuration file (`duplex serve --config`) over
/// the defaults. Input that is not UTF-8 is ignored (the server refuses
/// such a file before parsing).
///
/// Asserts: an error is one a configuration file can cause (TOML, a
/// duration, a setting) and says something. A configuration that applied
/// keeps the rules the loader enforces (at least 1 s of heartbeat and ping
/// interval, bursts and the SSE channel limit at least 1, a broker URL of
/// `redis://`/`rediss://` and a prefix without braces, namespace names
/// printable ASCII without `:`, recovery only with history); and applying
/// the same file again over the result succeeds and changes nothing.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut config = ServerConfig::default();
    match config_file::apply(&mut config, text) {
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::ConfigFile(_) | Error::Duration { .. } | Error::Setting { .. }
                ),
                "{e:?}"
            );
            assert!(!e.to_string().is_empty());
        }
        Ok(extras) => {
            check_config(&config);
            let mut again = config.clone();
            let extras_again = config_file::apply(&mut again, text).expect("applies again");
            assert_eq!(extras_again.allow_origin, extras.allow_origin);
            assert_eq!(format!("{again:?}"), format!("{config:?}"));
            // Debug leaves these out.
            let (a, b) = (&again.auth, &config.auth);
            assert_eq!(a.hmac_secret, b.hmac_secret);
            assert_eq!(a.api_key, b.api_key);
            assert_eq!(a.rsa_public_key, b.rsa_public_key);
            assert_eq!(a.ecdsa_public_key, b.ecdsa_public_key);
            assert_eq!(a.max_token_size, b.max_token_size);
        }
    }
}

fn check_config(c: &ServerConfig) {
    let second = std::time::Duration::from_secs(1);
    assert!(c.sse.heartbeat >= second && c.centrifuge.ping_interval >= second);
    assert!(c.sse.max_channels >= 1);
    assert!(c.per_ip.connection_burst >= 1 && c.centrifuge.command_burst >= 1);
    if let Some(b) = &c.broker {
        let urls = b.url.split(',').map(str::trim);
        assert!(urls
            .clone()
            .all(|u| u.starts_with("redis://") || u.starts_with("rediss://")));
        assert!(b.cluster || urls.count() == 1, "{:?}", b.url);
        assert!(!b.prefix.is_empty() && !b.prefix.contains(['{', '}']));
    }
    let ns = &c.hub.namespaces;
    for (name, o) in ns.named.iter().map(|(n, o)| (n.as_str(), o)) {
        assert!(
            !name.is_empty() && !name.contains(':') && name.bytes().all(|b| b.is_ascii_graphic()),
            "namespace {name:?}"
        );
        assert!(!o.recovery || o.has_history(), "{name}: {o:?}");
    }
    if let Some(o) = &ns.default {
        assert!(!o.recovery || o.has_history(), "{o:?}");
    }
}
