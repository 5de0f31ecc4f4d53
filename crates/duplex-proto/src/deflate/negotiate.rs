//! permessage-deflate negotiation: parsing `Sec-WebSocket-Extensions`
//! (several offers, quoted values, all four parameters) and settling on
//! [`DeflateParams`], on the server from the client's offers, on the client
//! from the server's response.

use crate::config::DeflateConfig;
use crate::error::Error;

/// The extension token.
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// One extension in a `Sec-WebSocket-Extensions` header: a name and its
/// parameters (values unquoted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// Extension token, e.g. `permessage-deflate`.
    pub name: String,
    /// Parameters in order; `None` for a parameter without a value.
    pub params: Vec<(String, Option<String>)>,
}

fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_tchar)
}

/// Splits on `sep` outside quoted strings.
fn split_unquoted(s: &str, sep: char) -> Result<Vec<&str>, Error> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if in_quotes && c == '\\' {
            escaped = true;
        } else if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            parts.push(&s[start..i]);
            start = i + 1;
        }
    }
    if in_quotes {
        return Err(Error::BadExtension("unterminated quoted string".into()));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn unquote(v: &str) -> Result<String, Error> {
    if let Some(inner) = v.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| Error::BadExtension(format!("bad quoted value {v:?}")))?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                out.extend(chars.next());
            } else {
                out.push(c);
            }
        }
        if !is_token(&out) {
            return Err(Error::BadExtension(format!(
                "quoted value {v:?} is not a token"
            )));
        }
        Ok(out)
    } else if is_token(v) {
        Ok(v.to_string())
    } else {
        Err(Error::BadExtension(format!("bad value {v:?}")))
    }
}

/// Parses the value(s) of `Sec-WebSocket-Extensions` (several header lines
/// may be joined with commas). Empty list elements are skipped.
pub fn parse_extensions(value: &str) -> Result<Vec<ExtensionOffer>, Error> {
    let mut out = Vec::new();
    for ext in split_unquoted(value, ',')? {
        let ext = ext.trim();
        if ext.is_empty() {
            continue;
        }
        let mut parts = split_unquoted(ext, ';')?.into_iter();
        let name = parts.next().unwrap_or_default().trim();
        if !is_token(name) {
            return Err(Error::BadExtension(format!("bad extension name {name:?}")));
        }
        let mut params = Vec::new();
        for p in parts {
            let p = p.trim();
            let (k, v) = match p.split_once('=') {
                Some((k, v)) => (k.trim(), Some(unquote(v.trim())?)),
                None => (p, None),
            };
            if !is_token(k) {
                return Err(Error::BadExtension(format!("bad parameter name {k:?}")));
            }
            params.push((k.to_ascii_lowercase(), v));
        }
        out.push(ExtensionOffer {
            name: name.to_ascii_lowercase(),
            params,
        });
    }
    Ok(out)
}

/// The parameters of one permessage-deflate offer or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DeflateParams {
    /// The server resets its compressor after each message.
    pub server_no_context_takeover: bool,
    /// The client resets its compressor after each message.
    pub client_no_context_takeover: bool,
    /// Largest window the server compresses with.
    pub server_max_window_bits: Option<u8>,
    /// In an offer: `Some(None)` means "present without a value" (the client
    /// accepts a limit). In a response: the client's largest window.
    pub client_max_window_bits: Option<Option<u8>>,
}

fn window_bits(v: &Option<String>, name: &str) -> Result<u8, Error> {
    let v = v
        .as_deref()
        .ok_or_else(|| Error::BadExtension(format!("{name} needs a value")))?;
    if v.len() > 2 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadExtension(format!("{name}={v}")));
    }
    match v.parse::<u8>() {
        Ok(n @ 8..=15) => Ok(n),
        _ => Err(Error::BadExtension(format!("{name}={v} not in 8..=15"))),
    }
}

impl DeflateParams {
    /// Validates the parameters of one `permessage-deflate` element: known
    /// names only, each at most once, window bits 8–15.
    pub fn from_params(params: &[(String, Option<String>)]) -> Result<Self, Error> {
        let mut p = DeflateParams::default();
        let mut seen = [false; 4];
        for (k, v) in params {
            let idx = match k.as_str() {
                "server_no_context_takeover" => 0,
                "client_no_context_takeover" => 1,
                "server_max_window_bits" => 2,
                "client_max_window_bits" => 3,
                other => return Err(Error::BadExtension(format!("unknown parameter {other}"))),
            };
            if std::mem::replace(&mut seen[idx], true) {
                return Err(Error::BadExtension(format!("duplicate parameter {k}")));
            }
            match idx {
                0 | 1 if v.is_some() => {
                    return Err(Error::BadExtension(format!("{k} takes no value")))
                }
                0 => p.server_no_context_takeover = true,
                1 => p.client_no_context_takeover = true,
                2 => p.server_max_window_bits = Some(window_bits(v, k)?),
                _ => {
                    p.client_max_window_bits = Some(if v.is_some() {
                        Some(window_bits(v, k)?)
                    } else {
                        None
                    })
                }
            }
        }
        Ok(p)
    }

    /// Formats as a header element, e.g. `permessage-deflate; server_no_context_takeover`.
    pub fn to_header(&self) -> String {
        let mut s = String::from(EXTENSION_NAME);
        if self.server_no_context_takeover {
            s.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            s.push_str("; client_no_context_takeover");
        }
        if let Some(n) = self.server_max_window_bits {
            s.push_str(&format!("; server_max_window_bits={n}"));
        }
        match self.client_max_window_bits {
            Some(Some(n)) => s.push_str(&format!("; client_max_window_bits={n}")),
            Some(None) => s.push_str("; client_max_window_bits"),
            None => {}
        }
        s
    }
}

/// Server side: picks the first acceptable permessage-deflate offer and
/// returns the agreed parameters (also the response to send). Invalid offers
/// are declined, not fatal; `None` means compression is off.
pub fn negotiate_server(offers: &[ExtensionOffer], cfg: &DeflateConfig) -> Option<DeflateParams> {
    for offer in offers.iter().filter(|o| o.name == EXTENSION_NAME) {
        let Ok(o) = DeflateParams::from_params(&offer.params) else {
            continue;
        };
        let our_bits = cfg.max_window_bits.clamp(8, 15);
        return Some(DeflateParams {
            server_no_context_takeover: o.server_no_context_takeover || cfg.no_context_takeover,
            client_no_context_takeover: o.client_no_context_takeover
                || cfg.request_peer_no_context_takeover,
            server_max_window_bits: match o.server_max_window_bits {
                Some(n) => Some(n.min(our_bits)),
                None if our_bits < 15 => Some(our_bits),
                None => None,
            },
            client_max_window_bits: match o.client_max_window_bits {
                Some(Some(n)) => Some(Some(n)),
                _ => None,
            },
        });
    }
    None
}

/// Client side: the offer to send.
pub fn client_offer(cfg: &DeflateConfig) -> DeflateParams {
    DeflateParams {
        server_no_context_takeover: cfg.request_peer_no_context_takeover,
        client_no_context_takeover: cfg.no_context_takeover,
        server_max_window_bits: None,
        client_max_window_bits: Some(None),
    }
}

/// Client side: validates the server's response against what we offered.
pub fn accept_response(
    value: &str,
    offered: &DeflateParams,
) -> Result<Option<DeflateParams>, Error> {
    let exts = parse_extensions(value)?;
    match exts.as_slice() {
        [] => Ok(None),
        [one] if one.name == EXTENSION_NAME => {
            let p = DeflateParams::from_params(&one.params)?;
            match p.client_max_window_bits {
                Some(None) => {
                    return Err(Error::BadExtension(
                        "client_max_window_bits needs a value".into(),
                    ))
                }
                Some(Some(_)) if offered.client_max_window_bits.is_none() => {
                    return Err(Error::UnofferedExtension("client_max_window_bits".into()))
                }
                _ => {}
            }
            if offered.server_no_context_takeover && !p.server_no_context_takeover {
                return Err(Error::BadExtension(
                    "server_no_context_takeover was requested".into(),
                ));
            }
            if let (Some(asked), Some(got)) =
                (offered.server_max_window_bits, p.server_max_window_bits)
            {
                if got > asked {
                    return Err(Error::BadExtension(
                        "server_max_window_bits above the offer".into(),
                    ));
                }
            }
            Ok(Some(p))
        }
        [one] => Err(Error::UnofferedExtension(one.name.clone())),
        _ => Err(Error::UnofferedExtension("more than one extension".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(s: &str) -> Vec<ExtensionOffer> {
        parse_extensions(s).unwrap()
    }

    #[test]
    fn parses_several_offers_and_quotes() {
        let o = offer(
            "permessage-deflate; client_max_window_bits=\"10\"; server_no_context_takeover, \
             permessage-deflate, x-foo",
        );
        assert_eq!(o.len(), 3);
        assert_eq!(
            o[0].params[0],
            ("client_max_window_bits".into(), Some("10".into()))
        );
        assert_eq!(o[1].params, vec![]);
        assert_eq!(o[2].name, "x-foo");
        assert!(parse_extensions("permessage-deflate; a=\"x").is_err());
        assert!(parse_extensions("bad name").is_err());
    }

    #[test]
    fn server_declines_bad_offer_and_takes_the_next() {
        let cfg = DeflateConfig::default();
        for bad in [
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=08x",
            "permessage-deflate; unknown_param",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=1",
        ] {
            assert_eq!(negotiate_server(&offer(bad), &cfg), None, "{bad}");
        }
        let p = negotiate_server(
            &offer("permessage-deflate; server_max_window_bits=7, permessage-deflate; client_max_window_bits"),
            &cfg,
        )
        .unwrap();
        assert_eq!(p, DeflateParams::default());
        assert_eq!(p.to_header(), "permessage-deflate");
    }

    #[test]
    fn server_honours_all_four_parameters() {
        let cfg = DeflateConfig::default();
        let p = negotiate_server(
            &offer(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
                 server_max_window_bits=10; client_max_window_bits=12",
            ),
            &cfg,
        )
        .unwrap();
        assert_eq!(
            p.to_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; \
             server_max_window_bits=10; client_max_window_bits=12"
        );
    }

    #[test]
    fn client_validates_response() {
        let offered = client_offer(&DeflateConfig::default());
        assert_eq!(accept_response("", &offered), Ok(None));
        assert!(accept_response("permessage-deflate", &offered)
            .unwrap()
            .is_some());
        assert!(accept_response("x-unknown", &offered).is_err());
        assert!(accept_response("permessage-deflate, permessage-deflate", &offered).is_err());
        assert!(accept_response("permessage-deflate; client_max_window_bits", &offered).is_err());
        assert!(accept_response("permessage-deflate; foo", &offered).is_err());
        let p = accept_response("permessage-deflate; client_max_window_bits=9", &offered).unwrap();
        assert_eq!(p.unwrap().client_max_window_bits, Some(Some(9)));
    }
}
