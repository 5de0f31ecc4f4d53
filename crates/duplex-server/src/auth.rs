//! Authentication: JWTs for connections and subscriptions (HS256, RS256,
//! ES256), and the key of the HTTP API. Comparisons of secrets are
//! constant-time; clock skew is bounded ([`AuthConfig::leeway`]).

use crate::error::{Error, FileAction, KeyKind};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashSet;
use std::time::Duration;

/// Authentication settings.
#[derive(Clone, Default)]
pub struct AuthConfig {
    /// HS256 secret.
    pub hmac_secret: Option<String>,
    /// RS256 public key (PEM).
    pub rsa_public_key: Option<String>,
    /// ES256 public key (PEM).
    pub ecdsa_public_key: Option<String>,
    /// Required `aud` claim, if any.
    pub audience: Option<String>,
    /// Required `iss` claim, if any.
    pub issuer: Option<String>,
    /// Key of the HTTP API (`X-API-Key` or `Authorization: apikey KEY`).
    pub api_key: Option<String>,
    /// Clients may connect without a token (as user "").
    pub allow_anonymous: bool,
    /// The HTTP API answers loopback peers without a key (development
    /// mode only).
    pub api_open_on_loopback: bool,
    /// Tolerated clock difference for `exp`, `nbf` and `iat`. Default 5 s
    /// (see [`DEFAULT_LEEWAY`]).
    pub leeway: Duration,
    /// Longest token accepted (bytes).
    pub max_token_size: usize,
}

/// Default clock skew tolerated on token times: 5 s.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);
/// Default largest token: 8 KiB.
pub const DEFAULT_MAX_TOKEN_SIZE: usize = 8 * 1024;

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        f.debug_struct("AuthConfig")
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "<set>"))
            .field("rsa_public_key", &self.rsa_public_key.is_some())
            .field("ecdsa_public_key", &self.ecdsa_public_key.is_some())
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("allow_anonymous", &self.allow_anonymous)
            .field("api_open_on_loopback", &self.api_open_on_loopback)
            .field("leeway", &self.leeway)
            .finish()
    }
}

/// Claims of a connection token.
#[derive(Debug, Clone, Deserialize)]
pub struct ConnectClaims {
    /// User id ("" allowed).
    #[serde(default)]
    pub sub: String,
    /// Expiry (Unix seconds); `None`: the connection never expires.
    #[serde(default)]
    pub exp: Option<u64>,
    /// Connection info shown in presence (any JSON).
    #[serde(default)]
    pub info: Option<Box<RawValue>>,
    /// Channels the server subscribes the connection to.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// Claims of a subscription token.
#[derive(Debug, Clone, Deserialize)]
pub struct SubscriptionClaims {
    /// User id; must be the connection's.
    #[serde(default)]
    pub sub: String,
    /// The channel it grants.
    pub channel: String,
    /// Expiry (Unix seconds).
    #[serde(default)]
    pub exp: Option<u64>,
    /// Channel info shown in presence (any JSON).
    #[serde(default)]
    pub info: Option<Box<RawValue>>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Valid but expired (the client should get a fresh one).
    Expired,
    /// Anything else: bad signature, algorithm not configured (`none`
    /// included), malformed, wrong audience or issuer, not yet valid, too
    /// large.
    Invalid(&'static str),
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenError::Expired => f.write_str("token expired"),
            TokenError::Invalid(why) => write!(f, "invalid token: {why}"),
        }
    }
}

/// Keys, ready to verify.
pub struct Auth {
    config: AuthConfig,
    hmac: Option<DecodingKey>,
    rsa: Option<DecodingKey>,
    ecdsa: Option<DecodingKey>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.config.fmt(f)
    }
}

/// Reads a PEM value: the text itself, or a path to a file holding it.
fn pem(v: &str) -> Result<Vec<u8>, Error> {
    if v.trim_start().starts_with("-----BEGIN") {
        Ok(v.as_bytes().to_vec())
    } else {
        std::fs::read(v).map_err(|source| Error::File {
            action: FileAction::Read,
            path: v.into(),
            source,
        })
    }
}

impl Auth {
    /// Parses the configured keys.
    pub fn new(config: AuthConfig) -> Result<Auth, Error> {
        let hmac = config
            .hmac_secret
            .as_ref()
            .map(|s| DecodingKey::from_secret(s.as_bytes()));
        let rsa = match &config.rsa_public_key {
            Some(k) => {
                Some(
                    DecodingKey::from_rsa_pem(&pem(k)?).map_err(|source| Error::TokenKey {
                        kind: KeyKind::Rsa,
                        source,
                    })?,
                )
            }
            None => None,
        };
        let ecdsa = match &config.ecdsa_public_key {
            Some(k) => {
                Some(
                    DecodingKey::from_ec_pem(&pem(k)?).map_err(|source| Error::TokenKey {
                        kind: KeyKind::Ecdsa,
                        source,
                    })?,
                )
            }
            None => None,
        };
        Ok(Auth {
            config,
            hmac,
            rsa,
            ecdsa,
        })
    }

    /// The settings.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Whether any token key is configured.
    pub fn has_keys(&self) -> bool {
        self.hmac.is_some() || self.rsa.is_some() || self.ecdsa.is_some()
    }

    fn verify<T: serde::de::DeserializeOwned>(&self, token: &str) -> Result<T, TokenError> {
        if token.len() > self.config.max_token_size.max(1) {
            return Err(TokenError::Invalid("too large"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("malformed"))?;
        let key = match header.alg {
            Algorithm::HS256 => self.hmac.as_ref(),
            Algorithm::RS256 => self.rsa.as_ref(),
            Algorithm::ES256 => self.ecdsa.as_ref(),
            _ => None,
        }
        .ok_or(TokenError::Invalid("algorithm not accepted"))?;
        let mut v = Validation::new(header.alg);
        v.leeway = self.config.leeway.as_secs();
        v.required_spec_claims = HashSet::new();
        v.validate_exp = true;
        v.validate_nbf = true;
        // A configured audience or issuer is required: jsonwebtoken checks
        // `aud` and `iss` only when the token carries them.
        match &self.config.audience {
            Some(a) => {
                v.set_audience(&[a]);
                v.required_spec_claims.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        if let Some(i) = &self.config.issuer {
            v.set_issuer(&[i]);
            v.required_spec_claims.insert("iss".into());
        }
        use jsonwebtoken::errors::ErrorKind as K;
        match jsonwebtoken::decode::<T>(token, key, &v) {
            Ok(d) => Ok(d.claims),
            Err(e) => Err(match e.kind() {
                K::ExpiredSignature => TokenError::Expired,
                K::InvalidSignature => TokenError::Invalid("bad signature"),
                K::ImmatureSignature => TokenError::Invalid("not yet valid"),
                K::InvalidAudience => TokenError::Invalid("wrong audience"),
                K::InvalidIssuer => TokenError::Invalid("wrong issuer"),
                K::MissingRequiredClaim(c) if c == "aud" => TokenError::Invalid("wrong audience"),
                K::MissingRequiredClaim(c) if c == "iss" => TokenError::Invalid("wrong issuer"),
                K::InvalidAlgorithm => TokenError::Invalid("algorithm not accepted"),
                _ => TokenError::Invalid("malformed"),
            }),
        }
    }

    /// Verifies a connection token.
    pub fn verify_connect(&self, token: &str) -> Result<ConnectClaims, TokenError> {
        self.verify(token)
    }

    /// Verifies a subscription token for `channel` and `user`.
    pub fn verify_subscription(
        &self,
        token: &str,
        channel: &str,
        user: &str,
    ) -> Result<SubscriptionClaims, TokenError> {
        let c: SubscriptionClaims = self.verify(token)?;
        if c.channel != channel {
            return Err(TokenError::Invalid("token is for another channel"));
        }
        if c.sub != user {
            return Err(TokenError::Invalid("token is for another user"));
        }
        Ok(c)
    }

    /// Whether an HTTP API request may proceed: the key matches
    /// (constant-time), or development mode lets a loopback peer in.
    pub fn api_allowed(&self, presented: Option<&str>, peer_is_loopback: bool) -> bool {
        match (&self.config.api_key, presented) {
            (Some(k), Some(p)) => {
                use subtle::ConstantTimeEq;
                bool::from(k.as_bytes().ct_eq(p.as_bytes()))
            }
            (None, _) => self.config.api_open_on_loopback && peer_is_loopback,
            (Some(_), None) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn auth(c: AuthConfig) -> Auth {
        Auth::new(AuthConfig {
            hmac_secret: Some("secret".into()),
            leeway: DEFAULT_LEEWAY,
            max_token_size: DEFAULT_MAX_TOKEN_SIZE,
            ..c
        })
        .unwrap()
    }

    fn hs(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn hs256_tokens_verify_and_carry_claims() {
        let a = auth(AuthConfig::default());
        let t = hs(
            json!({"sub": "alice", "exp": now() + 60, "info": {"n": 1}, "channels": ["news"]}),
            "secret",
        );
        let c = a.verify_connect(&t).unwrap();
        assert_eq!(c.sub, "alice");
        assert_eq!(c.info.unwrap().get(), r#"{"n":1}"#);
        assert_eq!(c.channels, ["news"]);
        // No exp: never expires.
        assert!(a
            .verify_connect(&hs(json!({"sub": "bob"}), "secret"))
            .unwrap()
            .exp
            .is_none());
    }

    #[test]
    fn bad_tokens_are_refused_with_their_reason() {
        let a = auth(AuthConfig::default());
        let wrong = hs(json!({"sub": "a"}), "other");
        assert_eq!(
            a.verify_connect(&wrong).unwrap_err(),
            TokenError::Invalid("bad signature")
        );
        let expired = hs(json!({"sub": "a", "exp": now() - 60}), "secret");
        assert_eq!(a.verify_connect(&expired).unwrap_err(), TokenError::Expired);
        // Within the leeway still valid.
        let just = hs(json!({"sub": "a", "exp": now() - 2}), "secret");
        assert!(a.verify_connect(&just).is_ok());
        let early = hs(json!({"sub": "a", "nbf": now() + 600}), "secret");
        assert_eq!(
            a.verify_connect(&early).unwrap_err(),
            TokenError::Invalid("not yet valid")
        );
        // alg none: header {"alg":"none"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhIn0.";
        assert!(matches!(
            a.verify_connect(none),
            Err(TokenError::Invalid(_))
        ));
        assert!(matches!(
            a.verify_connect("garbage"),
            Err(TokenError::Invalid(_))
        ));
        let huge = hs(json!({"sub": "x".repeat(10_000)}), "secret");
        assert_eq!(
            a.verify_connect(&huge).unwrap_err(),
            TokenError::Invalid("too large")
        );
        // RS256 is not configured here.
        let rs = "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhIn0.c2ln";
        assert_eq!(
            a.verify_connect(rs).unwrap_err(),
            TokenError::Invalid("algorithm not accepted")
        );
    }

    #[test]
    fn audience_and_issuer_when_configured() {
        let a = auth(AuthConfig {
            audience: Some("duplex".into()),
            issuer: Some("me".into()),
            ..Default::default()
        });
        assert!(a
            .verify_connect(&hs(
                json!({"sub": "a", "aud": "duplex", "iss": "me"}),
                "secret"
            ))
            .is_ok());
        assert_eq!(
            a.verify_connect(&hs(json!({"sub": "a", "aud": "x", "iss": "me"}), "secret"))
                .unwrap_err(),
            TokenError::Invalid("wrong audience")
        );
        assert_eq!(
            a.verify_connect(&hs(
                json!({"sub": "a", "aud": "duplex", "iss": "x"}),
                "secret"
            ))
            .unwrap_err(),
            TokenError::Invalid("wrong issuer")
        );
        // Required when configured: a token without them (or with a value
        // that is not a string or list of strings) is refused.
        for claims in [
            json!({"sub": "a", "iss": "me"}),
            json!({"sub": "a", "aud": "duplex"}),
            json!({"sub": "a", "aud": 5, "iss": "me"}),
            json!({"sub": "a", "aud": "duplex", "iss": null}),
        ] {
            assert!(
                matches!(
                    a.verify_connect(&hs(claims.clone(), "secret")),
                    Err(TokenError::Invalid("wrong audience" | "wrong issuer"))
                ),
                "{claims}"
            );
        }
    }

    #[test]
    fn subscription_tokens_name_their_channel_and_user() {
        let a = auth(AuthConfig::default());
        let t = hs(json!({"sub": "alice", "channel": "secret:1"}), "secret");
        assert!(a.verify_subscription(&t, "secret:1", "alice").is_ok());
        assert!(a.verify_subscription(&t, "secret:2", "alice").is_err());
        assert!(a.verify_subscription(&t, "secret:1", "bob").is_err());
    }

    #[test]
    fn es256_and_rs256_keys() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let a = Auth::new(AuthConfig {
            ecdsa_public_key: Some(key.public_key_pem()),
            max_token_size: DEFAULT_MAX_TOKEN_SIZE,
            ..Default::default()
        })
        .unwrap();
        let enc = EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let t = encode(&Header::new(Algorithm::ES256), &json!({"sub": "e"}), &enc).unwrap();
        assert_eq!(a.verify_connect(&t).unwrap().sub, "e");
        // An HS256 token is refused when only ES256 is configured.
        assert!(a
            .verify_connect(&hs(json!({"sub": "e"}), "secret"))
            .is_err());
    }

    #[test]
    fn api_keys() {
        let a = auth(AuthConfig {
            api_key: Some("k".into()),
            ..Default::default()
        });
        assert!(a.api_allowed(Some("k"), false));
        assert!(!a.api_allowed(Some("K"), true));
        assert!(!a.api_allowed(None, true));
        let dev = auth(AuthConfig {
            api_open_on_loopback: true,
            ..Default::default()
        });
        assert!(dev.api_allowed(None, true));
        assert!(!dev.api_allowed(None, false));
    }
}
