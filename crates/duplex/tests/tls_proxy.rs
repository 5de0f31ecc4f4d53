//! wss:// with rustls, HTTP CONNECT proxies, and the default handshake
//! policy (Origin, subprotocols), over real loopback sockets.

use duplex::tls::rustls;
use duplex::{
    ClientOptions, CloseCode, Error, Message, Policy, Proxy, ProxyError, TlsError, Verify,
};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// A fresh temporary directory, removed when the returned guard drops.
fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("duplex-tls-{tag}-"))
        .tempdir()
        .unwrap()
}

/// A self-signed certificate for localhost and 127.0.0.1, written to a
/// fresh directory: (the directory's guard, cert path, key path).
fn test_cert(tag: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = temp_dir(tag);
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (dir, cert, key)
}

/// An echo server over TLS for `conns` connections; returns its port.
async fn tls_echo_server(cert: &Path, key: &Path, conns: usize) -> u16 {
    let config = duplex::tls::server_config(cert, key).unwrap();
    let acceptor = duplex::tls::TlsAcceptor::from(config);
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        for _ in 0..conns {
            let (tcp, _) = l.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // Failed TLS handshakes (untrusted certificate) end here.
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut ws = duplex::accept(tls).await.unwrap();
                while let Some(Ok(m)) = ws.recv().await {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

async fn echo_roundtrip(url: &str, opts: ClientOptions) {
    let mut ws = duplex::connect_with(url, opts).await.unwrap();
    assert!(ws.get_ref().is_tls() == url.starts_with("wss:"));
    assert_eq!(ws.extensions(), "permessage-deflate");
    let big = vec![7u8; 1 << 20];
    ws.send(Message::text("héllo wörld 🌍")).await.unwrap();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(
        ws.recv().await.unwrap().unwrap(),
        Message::text("héllo wörld 🌍")
    );
    assert_eq!(ws.recv().await.unwrap().unwrap(), Message::binary(big));
    ws.close(CloseCode::NORMAL, "").await.unwrap();
    assert!(ws.was_clean());
}

#[tokio::test]
async fn wss_with_a_private_ca_by_name_and_by_ip() {
    let (_dir, cert, key) = test_cert("ca");
    let port = tls_echo_server(&cert, &key, 2).await;
    let opts = ClientOptions {
        verify: Verify::WithCa(vec![cert.clone()]),
        proxy: Proxy::None,
        ..Default::default()
    };
    // SNI "localhost" and a name check against the DNS SAN.
    echo_roundtrip(&format!("wss://localhost:{port}/x"), opts.clone()).await;
    // No SNI for an IP literal; the IP SAN is checked.
    echo_roundtrip(&format!("wss://127.0.0.1:{port}/x"), opts).await;
}

#[tokio::test]
async fn wss_refuses_an_untrusted_certificate_unless_insecure() {
    let (_dir, cert, key) = test_cert("untrusted");
    let port = tls_echo_server(&cert, &key, 2).await;
    let url = format!("wss://localhost:{port}/");
    let err = duplex::connect_with(
        &url,
        ClientOptions {
            proxy: Proxy::None,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    match &err {
        Error::Tls(tls @ TlsError::Handshake { host, .. }) => {
            assert_eq!(host, "localhost");
            // The rustls error is kept, not flattened into text.
            assert!(
                matches!(
                    tls.rustls_error(),
                    Some(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::UnknownIssuer
                    ))
                ),
                "{tls:?}"
            );
            assert!(std::error::Error::source(&err).is_some());
        }
        e => panic!("expected a TLS handshake error, got {e:?}"),
    }
    echo_roundtrip(
        &url,
        ClientOptions {
            verify: Verify::Insecure,
            proxy: Proxy::None,
            ..Default::default()
        },
    )
    .await;
}

#[tokio::test]
async fn tls_config_errors_are_clear() {
    let guard = temp_dir("bad");
    let dir = guard.path();
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a pem file\n").unwrap();
    let missing = dir.join("missing.pem");
    // Not PEM at all: no certificate in it, and the file is named.
    match duplex::tls::server_config(&junk, &junk) {
        Err(Error::Tls(TlsError::NoCertificate { path })) => {
            assert_eq!(path.as_deref(), Some(junk.as_path()))
        }
        other => panic!("expected a missing certificate, got {other:?}"),
    }
    // A file that is not there: the I/O error is the source.
    match duplex::tls::server_config(&missing, &junk) {
        Err(Error::Tls(TlsError::ReadFile { path, source })) => {
            assert_eq!(path, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected a read error, got {other:?}"),
    }
    // A certificate without a usable key.
    let (_nokey, cert, _) = test_cert("nokey");
    match duplex::tls::server_config(&cert, &junk) {
        Err(Error::Tls(TlsError::Pem {
            item: duplex::PemItem::Key,
            path,
            ..
        })) => assert_eq!(path.as_deref(), Some(junk.as_path())),
        other => panic!("expected a key error, got {other:?}"),
    }
    match duplex::tls::client_config(&Verify::OnlyCa(vec![junk.clone()])) {
        Err(Error::Tls(TlsError::NoCertificate { path })) => {
            assert_eq!(path.as_deref(), Some(junk.as_path()))
        }
        other => panic!("expected a missing certificate, got {other:?}"),
    }
}

/// A minimal CONNECT proxy: records request lines, refuses with 407 when
/// `require_auth` is set and no credentials came, relays otherwise.
async fn connect_proxy(require_auth: Option<&'static str>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = l.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(tcp);
                let mut head = Vec::new();
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.unwrap() == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    head.push(line.trim_end().to_string());
                }
                log.lock().unwrap().push(head.join("|"));
                let mut client = r.into_inner();
                if let Some(auth) = require_auth {
                    if !head.iter().any(|h| h.contains(auth)) {
                        let _ = client
                            .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        return;
                    }
                }
                let target = head[0].split(' ').nth(1).unwrap().to_string();
                let mut upstream = TcpStream::connect(target).await.unwrap();
                client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test]
async fn ws_and_wss_through_a_connect_proxy() {
    let (_dir, cert, key) = test_cert("proxy");
    let tls_port = tls_echo_server(&cert, &key, 1).await;
    let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain_port = plain.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = plain.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        while let Some(Ok(m)) = ws.recv().await {
            ws.send(m).await.unwrap();
        }
    });
    let (proxy_port, seen) = connect_proxy(None).await;
    let proxy = Proxy::Url(format!("http://127.0.0.1:{proxy_port}"));
    echo_roundtrip(
        &format!("ws://127.0.0.1:{plain_port}/p"),
        ClientOptions {
            proxy: proxy.clone(),
            ..Default::default()
        },
    )
    .await;
    echo_roundtrip(
        &format!("wss://localhost:{tls_port}/p"),
        ClientOptions {
            proxy,
            verify: Verify::OnlyCa(vec![cert]),
            ..Default::default()
        },
    )
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen[0].starts_with(&format!("CONNECT 127.0.0.1:{plain_port} HTTP/1.1")));
    assert!(seen[1].starts_with(&format!("CONNECT localhost:{tls_port} HTTP/1.1")));
}

#[tokio::test]
async fn proxy_authentication_and_refusal() {
    // "user:secret" in base64.
    let (proxy_port, seen) = connect_proxy(Some("Basic dXNlcjpzZWNyZXQ=")).await;
    let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_port = target.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (tcp, _) = target.accept().await.unwrap();
        let mut ws = duplex::accept(tcp).await.unwrap();
        while let Some(Ok(m)) = ws.recv().await {
            ws.send(m).await.unwrap();
        }
    });
    let url = format!("ws://127.0.0.1:{target_port}/");
    let err = duplex::connect_with(
        &url,
        ClientOptions {
            proxy: Proxy::Url(format!("http://127.0.0.1:{proxy_port}")),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    match &err {
        Error::Proxy(ProxyError::Refused {
            status: 407,
            reason,
        }) => {
            assert_eq!(reason, "Proxy Authentication Required")
        }
        e => panic!("expected a proxy refusal, got {e:?}"),
    }
    assert_eq!(err.http_status(), Some(407));
    echo_roundtrip(
        &url,
        ClientOptions {
            proxy: Proxy::Url(format!("http://user:secret@127.0.0.1:{proxy_port}")),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn default_policy_refuses_a_foreign_origin() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..3 {
            let (tcp, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                if let Ok(mut ws) = duplex::accept(tcp).await {
                    let _ = ws.close(CloseCode::NORMAL, "").await;
                }
            });
        }
    });
    let url = format!("ws://{addr}/");
    let with_origin = |o: &str| ClientOptions {
        origin: Some(o.to_string()),
        proxy: Proxy::None,
        ..Default::default()
    };
    let err = duplex::connect_with(&url, with_origin("http://evil.example"))
        .await
        .unwrap_err();
    // The server's reason travels with the status.
    match &err {
        Error::Refused {
            status: 403,
            reason,
        } => {
            assert!(
                reason.contains("\"http://evil.example\" is not allowed"),
                "{reason}"
            )
        }
        e => panic!("expected 403, got {e}"),
    }
    // Same host and port as the Host header: the server's own page.
    duplex::connect_with(&url, with_origin(&format!("http://{addr}")))
        .await
        .unwrap();
    // No Origin at all: not a browser.
    let no_origin = ClientOptions {
        proxy: Proxy::None,
        ..Default::default()
    };
    duplex::connect_with(&url, no_origin).await.unwrap();
}

#[tokio::test]
async fn policy_allowlist_and_subprotocol_choice() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let policy = Policy {
        origins: duplex::proto::handshake::policy::OriginPolicy::default()
            .allow("https://app.example"),
        protocols: vec!["chat.v2".into(), "chat.v1".into()],
    };
    tokio::spawn(async move {
        for _ in 0..3 {
            let (tcp, _) = l.accept().await.unwrap();
            let policy = policy.clone();
            tokio::spawn(async move {
                let r =
                    duplex::accept_with(tcp, duplex::Config::default(), |req| policy.decide(req))
                        .await;
                if let Ok(mut ws) = r {
                    let _ = ws.close(CloseCode::NORMAL, "").await;
                }
            });
        }
    });
    let url = format!("ws://{addr}/");
    let opts = |origin: &str, protocols: &[&str]| ClientOptions {
        origin: Some(origin.to_string()),
        protocols: protocols.iter().map(|p| p.to_string()).collect(),
        proxy: Proxy::None,
        ..Default::default()
    };
    // The client's first supported preference wins.
    let ws = duplex::connect_with(
        &url,
        opts("https://app.example", &["x", "chat.v1", "chat.v2"]),
    )
    .await
    .unwrap();
    assert_eq!(ws.protocol(), Some("chat.v1"));
    // Nothing in common: accepted without a subprotocol.
    let ws = duplex::connect_with(&url, opts("https://app.example", &["x"]))
        .await
        .unwrap();
    assert_eq!(ws.protocol(), None);
    let err = duplex::connect_with(&url, opts("https://other.example", &[]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Refused { status: 403, .. }), "{err}");
}

#[tokio::test]
async fn a_self_signed_ca_certificate_given_as_ca_is_pinned() {
    // `openssl req -x509` makes certificates marked CA:TRUE, which webpki
    // refuses as a server's own certificate; given explicitly, it is trusted.
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let guard = temp_dir("pin");
    let dir = guard.path();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let port = tls_echo_server(&cert_path, &key_path, 2).await;
    echo_roundtrip(
        &format!("wss://127.0.0.1:{port}/"),
        ClientOptions {
            verify: Verify::OnlyCa(vec![cert_path]),
            proxy: Proxy::None,
            ..Default::default()
        },
    )
    .await;
    // Pinning some other certificate does not trust this one.
    let (_other, other, _) = test_cert("pin-other");
    let err = duplex::connect_with(
        &format!("wss://localhost:{port}/"),
        ClientOptions {
            verify: Verify::WithCa(vec![other]),
            proxy: Proxy::None,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(&err, Error::Tls(TlsError::Handshake { .. })),
        "{err:?}"
    );
}

#[tokio::test]
async fn url_and_unreachable_proxy_errors_are_variants() {
    let err = duplex::connect("ftp://example.com/").await.unwrap_err();
    assert!(
        matches!(&err, Error::Url(duplex::UrlError::UnsupportedScheme(s)) if s == "ftp"),
        "{err:?}"
    );
    assert!(std::error::Error::source(&err).is_some());
    // A proxy nobody listens on: the connect error is kept as the source.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let err = duplex::connect_with(
        "ws://127.0.0.1:9/",
        ClientOptions {
            proxy: Proxy::Url(format!("http://{dead}")),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    match &err {
        Error::Proxy(ProxyError::Connect { proxy, source }) => {
            assert_eq!(proxy, &dead.to_string());
            assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused);
        }
        e => panic!("expected an unreachable proxy, got {e:?}"),
    }
    let err = duplex::connect_with(
        "ws://127.0.0.1:9/",
        ClientOptions {
            proxy: Proxy::Url("socks5://127.0.0.1:1080".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Proxy(ProxyError::Url(duplex::UrlError::UnsupportedScheme(_)))
        ),
        "{err:?}"
    );
}
