//! `duplex token`: prints a connection or subscription JWT (HS256), for
//! development and tests.

use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

/// Options of `duplex token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user id (`sub`).
    #[arg(long, short, default_value = "")]
    user: String,
    /// HS256 secret; defaults to the configuration file's
    /// auth.token_hmac_secret.
    #[arg(long, env = "DUPLEX_TOKEN_HMAC_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Configuration file to read the secret from, and the audience and
    /// issuer it requires (added as `aud` / `iss`).
    #[arg(long, value_name = "FILE", env = "DUPLEX_CONFIG")]
    config: Option<PathBuf>,
    /// Lifetime in seconds (0: no `exp`).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
    /// Make a subscription token for this channel instead of a connection
    /// token.
    #[arg(long)]
    channel: Option<String>,
    /// Connection (or channel) info: JSON shown in presence.
    #[arg(long, value_name = "JSON")]
    info: Option<String>,
    /// Server-side subscriptions (connection tokens): channels the server
    /// subscribes the connection to. Repeatable or comma-separated.
    #[arg(long = "subscribe", value_name = "CHANNEL", value_delimiter = ',')]
    channels: Vec<String>,
}

pub fn run(a: TokenArgs) -> ExitCode {
    // The configuration file: the secret (unless --secret), and the audience
    // and issuer a server with that file requires.
    let auth = match &a.config {
        Some(path) => {
            let mut c = duplex_server::ServerConfig::default();
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("duplex token: cannot read {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            };
            if let Err(e) = duplex_server::config_file::apply(&mut c, &text) {
                eprintln!("duplex token: {}: {e}", path.display());
                return ExitCode::from(2);
            }
            Some(c.auth)
        }
        None => None,
    };
    let secret = match (&a.secret, &a.config, &auth) {
        (Some(s), _, _) => s.clone(),
        (None, Some(path), Some(auth)) => match &auth.hmac_secret {
            Some(s) => s.clone(),
            None => {
                eprintln!(
                    "duplex token: {} sets no auth.token_hmac_secret",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("duplex token: give --secret or --config");
            return ExitCode::from(2);
        }
    };
    let mut claims = serde_json::json!({ "sub": a.user });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    claims["iat"] = now.into();
    if a.ttl > 0 {
        claims["exp"] = (now + a.ttl).into();
    }
    if let Some(info) = &a.info {
        match serde_json::from_str::<serde_json::Value>(info) {
            Ok(v) => claims["info"] = v,
            Err(e) => {
                eprintln!("duplex token: --info is not JSON: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(auth) = &auth {
        if let Some(aud) = &auth.audience {
            claims["aud"] = aud.clone().into();
        }
        if let Some(iss) = &auth.issuer {
            claims["iss"] = iss.clone().into();
        }
    }
    match &a.channel {
        Some(ch) => claims["channel"] = ch.clone().into(),
        None if !a.channels.is_empty() => claims["channels"] = a.channels.clone().into(),
        None => {}
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    match jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key) {
        Ok(t) => {
            println!("{t}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("duplex token: {e}");
            ExitCode::from(1)
        }
    }
}
