//! TLS for `duplex serve`: certificates from PEM files, or a self-signed
//! development certificate made at start.

use crate::error::{Error, FileAction};
use duplex::tls::rustls;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a self-signed certificate was written.
#[derive(Debug, Clone)]
pub struct SelfSigned {
    /// PEM certificate (give it to clients to trust: `--ca`, `cafile=`).
    pub cert: PathBuf,
    /// PEM private key (mode 0600 on Unix).
    pub key: PathBuf,
    /// The server configuration using them.
    pub config: Arc<rustls::ServerConfig>,
}

/// Makes a fresh self-signed certificate for `localhost`, `127.0.0.1` and
/// `::1`, valid for 30 days, writes `cert.pem` and `key.pem` into `dir`
/// (created if needed) and returns a server configuration for it. For
/// development only: browsers warn about it until it is trusted.
pub fn self_signed(dir: &Path) -> Result<SelfSigned, Error> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let cert_err = |step| move |source| Error::Certificate { step, source };
    let mut params = rcgen::CertificateParams::new(names).map_err(cert_err("parameters"))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "duplex development certificate");
    let now = std::time::SystemTime::now();
    params.not_before = (now - std::time::Duration::from_secs(3600)).into();
    params.not_after = (now + std::time::Duration::from_secs(30 * 24 * 3600)).into();
    let key = rcgen::KeyPair::generate().map_err(cert_err("key generation"))?;
    let cert = params.self_signed(&key).map_err(cert_err("self-signing"))?;
    let file_err = |action, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::File {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(dir).map_err(file_err(FileAction::CreateDir, dir))?;
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let cert_pem = cert.pem();
    let key_pem = key.serialize_pem();
    std::fs::write(&cert_path, &cert_pem).map_err(file_err(FileAction::Write, &cert_path))?;
    write_private(&key_path, key_pem.as_bytes()).map_err(file_err(FileAction::Write, &key_path))?;
    let config = duplex::tls::server_config_from_pem(cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(Error::Tls)?;
    Ok(SelfSigned {
        cert: cert_path,
        key: key_path,
        config,
    })
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}
