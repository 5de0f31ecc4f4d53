//! The one error type of `duplex-server`: what can stop a server from
//! starting (a configuration file, keys, certificates).
//!
//! Each variant says what went wrong with which setting or file and keeps
//! the underlying error as its [`source`](std::error::Error::source).
//! `Display` includes the source's message too, so printing the error alone
//! (as `duplex serve` does) says everything.

use std::fmt;
use std::path::PathBuf;

/// Everything that can go wrong while configuring a server.
#[non_exhaustive]
#[derive(Debug)]
pub enum Error {
    /// The configuration file is not TOML, has an unknown key (a typo is
    /// reported, not ignored) or a value of the wrong type.
    ConfigFile(toml::de::Error),
    /// A duration in the configuration file that does not parse.
    Duration {
        /// The key, as the file writes it (`hub.ping_interval`).
        key: String,
        /// The value given.
        value: String,
        /// Why it does not parse.
        source: humantime::DurationError,
    },
    /// A setting out of its range, or at odds with another setting.
    Setting {
        /// The key, as the file writes it (`namespaces.chat`).
        key: String,
        /// What is required of it.
        requirement: &'static str,
    },
    /// A file could not be read or written, or a directory created.
    File {
        /// What was being done.
        action: FileAction,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A token verification key that does not parse as PEM of its kind.
    TokenKey {
        /// Which key.
        kind: KeyKind,
        /// The parser's error.
        source: jsonwebtoken::errors::Error,
    },
    /// The self-signed development certificate could not be made.
    Certificate {
        /// The step that failed: `"parameters"`, `"key generation"` or
        /// `"self-signing"`.
        step: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A certificate and key that do not make a TLS server configuration.
    Tls(duplex::Error),
    /// The broker (Redis) could not be reached at startup.
    Broker(crate::broker::BrokerError),
}

/// What was being done to a file when it failed ([`Error::File`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileAction {
    /// Reading (a PEM key given as a path).
    Read,
    /// Writing (a generated certificate or key).
    Write,
    /// Creating a directory.
    CreateDir,
}

/// Which token verification key ([`Error::TokenKey`]).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// The RS256 public key (`auth.token_rsa_public_key`).
    Rsa,
    /// The ES256 public key (`auth.token_ecdsa_public_key`).
    Ecdsa,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::ConfigFile(e) => write!(f, "{e}"),
            Error::Duration { key, value, source } => write!(f, "{key}: {value:?}: {source}"),
            Error::Setting { key, requirement } => write!(f, "{key}: {requirement}"),
            Error::File {
                action,
                path,
                source,
            } => {
                let verb = match action {
                    FileAction::Read => "read",
                    FileAction::Write => "write",
                    FileAction::CreateDir => "create",
                };
                write!(f, "cannot {verb} {}: {source}", path.display())
            }
            Error::TokenKey { kind, source } => {
                let kind = match kind {
                    KeyKind::Rsa => "RSA",
                    KeyKind::Ecdsa => "ECDSA",
                };
                write!(f, "{kind} public key: {source}")
            }
            Error::Certificate { step, source } => write!(f, "certificate {step}: {source}"),
            Error::Tls(e) => write!(f, "{e}"),
            Error::Broker(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::ConfigFile(e) => Some(e),
            Error::Duration { source, .. } => Some(source),
            Error::Setting { .. } => None,
            Error::File { source, .. } => Some(source),
            Error::TokenKey { source, .. } => Some(source),
            Error::Certificate { source, .. } => Some(source),
            Error::Tls(e) => Some(e),
            Error::Broker(e) => Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_the_setting_or_file_and_keep_the_source() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = Error::File {
            action: FileAction::Read,
            path: "/nowhere/key.pem".into(),
            source: io(),
        };
        assert!(
            e.to_string().starts_with("cannot read /nowhere/key.pem: "),
            "{e}"
        );
        let src = e
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .unwrap();
        assert_eq!(src.kind(), std::io::ErrorKind::NotFound);

        let e = Error::Setting {
            key: "hub.ping_interval".into(),
            requirement: "at least 1s",
        };
        assert_eq!(e.to_string(), "hub.ping_interval: at least 1s");
        assert!(e.source().is_none());

        let source = humantime::parse_duration("soon").unwrap_err();
        let e = Error::Duration {
            key: "hub.ping_interval".into(),
            value: "soon".into(),
            source,
        };
        assert!(
            e.to_string().starts_with("hub.ping_interval: \"soon\": "),
            "{e}"
        );
        assert!(e.source().unwrap().is::<humantime::DurationError>());
    }
}
