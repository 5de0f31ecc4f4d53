//! TLS for `wss://` with rustls: client and server configurations, and the
//! stream type a client gets.
//!
//! Only TLS 1.2 and 1.3 are offered (rustls implements nothing older), with
//! the `ring` cryptography provider and ALPN `http/1.1`, the protocol a
//! WebSocket upgrade runs over. Clients verify the server against the
//! Mozilla root store bundled by `webpki-roots`, plus any private CA given,
//! and send SNI for host names.

use crate::error::{PemItem, Result, TlsError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub use tokio_rustls::{rustls, TlsAcceptor, TlsConnector};

/// The ALPN protocol of a WebSocket upgrade.
const ALPN_HTTP1: &[u8] = b"http/1.1";

fn provider() -> Arc<CryptoProvider> {
    static P: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// How a client verifies the server's certificate.
#[derive(Debug, Clone, Default)]
pub enum Verify {
    /// The bundled Mozilla root store (the default).
    #[default]
    WebPki,
    /// The bundled roots plus the certificates in these PEM files: a private
    /// CA, or the server's own (self-signed) certificate, which is then
    /// trusted as is, whatever name it carries.
    WithCa(Vec<std::path::PathBuf>),
    /// Only the certificates in these PEM files.
    OnlyCa(Vec<std::path::PathBuf>),
    /// No verification at all: any certificate for any name is accepted.
    /// Encrypts but does not authenticate — for development only.
    Insecure,
}

/// A client configuration for `wss://`. The default one is built once and
/// shared.
pub fn client_config(verify: &Verify) -> Result<Arc<ClientConfig>> {
    static DEFAULT: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if matches!(verify, Verify::WebPki) {
        if let Some(c) = DEFAULT.get() {
            return Ok(c.clone());
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?;
    let mut config = match verify {
        Verify::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
            .with_no_client_auth(),
        Verify::WebPki => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::WithCa(files) | Verify::OnlyCa(files) => {
            let mut roots = RootCertStore::empty();
            if matches!(verify, Verify::WithCa(_)) {
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            let mut pinned = Vec::new();
            for f in files {
                for cert in load_certs(f)? {
                    // A certificate that is not a valid trust anchor may
                    // still be pinned (see `PinnedOrRoots`).
                    let _ = roots.add(cert.clone());
                    pinned.push(cert);
                }
            }
            let roots = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(TlsError::Verifier)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedOrRoots { pinned, roots }))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    let config = Arc::new(config);
    if matches!(verify, Verify::WebPki) {
        let _ = DEFAULT.set(config.clone());
    }
    Ok(config)
}

/// A server configuration from a PEM certificate chain and a PEM private
/// key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config_from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Arc<ServerConfig>> {
    server_config_at(cert_chain, key, None, None)
}

/// [`server_config_from_pem`] reading two files.
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>> {
    server_config_at(
        &read_pem(cert_file)?,
        &read_pem(key_file)?,
        Some(cert_file),
        Some(key_file),
    )
}

/// The server configuration; the paths, when the PEM came from files,
/// name them in errors.
fn server_config_at(
    cert_chain: &[u8],
    key: &[u8],
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Arc<ServerConfig>> {
    let certs = parse_certs(cert_chain, cert_file)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|source| TlsError::Pem {
        item: PemItem::Key,
        path: key_file.map(Path::to_path_buf),
        source,
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

fn read_pem(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| {
        TlsError::ReadFile {
            path: path.to_path_buf(),
            source,
        }
        .into()
    })
}

/// The certificates of a PEM chain: at least one.
fn parse_certs(pem: &[u8], path: Option<&Path>) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            item: PemItem::Certificate,
            path: path.map(Path::to_path_buf),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.map(Path::to_path_buf),
        }
        .into());
    }
    Ok(certs)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    parse_certs(&read_pem(path)?, Some(path))
}

/// Runs the TLS client handshake over `stream`, sending SNI for `host`
/// when it is a name (not for IP literals, as RFC 6066 requires).
pub async fn connect_tls<S>(
    stream: S,
    host: &str,
    config: Arc<ClientConfig>,
) -> Result<tokio_rustls::client::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let name = ServerName::try_from(host.to_string()).map_err(|source| TlsError::ServerName {
        host: host.to_string(),
        source,
    })?;
    let tls = TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(|source| TlsError::Handshake {
            host: host.to_string(),
            source,
        })?;
    Ok(tls)
}

/// A client's transport: plain TCP for `ws://`, TLS for `wss://`.
#[derive(Debug)]
pub enum MaybeTlsStream<S> {
    /// `ws://`.
    Plain(S),
    /// `wss://`.
    Tls(Box<tokio_rustls::client::TlsStream<S>>),
}

impl<S> MaybeTlsStream<S> {
    /// The underlying transport (below TLS).
    pub fn get_ref(&self) -> &S {
        match self {
            MaybeTlsStream::Plain(s) => s,
            MaybeTlsStream::Tls(s) => s.get_ref().0,
        }
    }

    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self, MaybeTlsStream::Tls(_))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for MaybeTlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for MaybeTlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            MaybeTlsStream::Plain(s) => s.is_write_vectored(),
            MaybeTlsStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Trusts a server whose certificate is byte-identical to one the user
/// gave (a self-signed certificate, which tools such as `openssl req -x509`
/// mark as a CA and webpki therefore refuses as a server certificate), and
/// otherwise verifies the chain and name against the roots.
#[derive(Debug)]
struct PinnedOrRoots {
    pinned: Vec<CertificateDer<'static>>,
    roots: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedOrRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        if self
            .pinned
            .iter()
            .any(|p| p.as_ref() == end_entity.as_ref())
        {
            return Ok(ServerCertVerified::assertion());
        }
        self.roots
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.roots.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.roots.supported_verify_schemes()
    }
}

/// Accepts every certificate: the `Insecure` mode. Signatures are still
/// checked so the handshake is well-formed; identity is not.
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
