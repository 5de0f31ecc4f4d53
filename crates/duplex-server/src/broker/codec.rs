//! How a shared broker stores publications and client infos, and frames the
//! messages nodes exchange: a small binary layout, version-tagged, that
//! carries payloads (JSON or binary) without re-encoding them.
//!
//! A stored publication (`body`): version byte `1`, `time_ms` (u64 LE), a
//! flags byte (bit 0: a client published it), the client info when present,
//! then the payload to the end. A client info: four length-prefixed (u32
//! LE) fields — client, user, conn_info, chan_info — where `u32::MAX` marks
//! an absent info field.
//!
//! A pub/sub message on a channel is one of
//! - `p<offset>:<epoch>:<body>` — a publication (offset 0 and an empty
//!   epoch when the channel keeps no history); the history script writes
//!   this prefix itself, with the offset it assigned;
//! - `j<info>` / `l<info>` — a join / a leave.

use crate::hub::{ClientId, ClientInfo, Publication};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

const VERSION: u8 = 1;
const ABSENT: u32 = u32::MAX;

/// A message received on a channel.
#[derive(Debug, PartialEq, Eq)]
pub enum ChannelMessage {
    /// A publication and, when the channel keeps history, its epoch.
    Publication(Publication, Arc<str>),
    /// A join.
    Join(ClientInfo),
    /// A leave.
    Leave(ClientInfo),
}

/// Why a stored or received message could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub &'static str);

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "undecodable broker message: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

fn put_field(out: &mut BytesMut, field: Option<&[u8]>) {
    match field {
        Some(f) => {
            out.put_u32_le(f.len() as u32);
            out.put_slice(f);
        }
        None => out.put_u32_le(ABSENT),
    }
}

fn put_info(out: &mut BytesMut, info: &ClientInfo) {
    put_field(out, Some(info.client.text().as_bytes()));
    put_field(out, Some(info.user.as_bytes()));
    put_field(out, info.conn_info.as_deref());
    put_field(out, info.chan_info.as_deref());
}

fn info_len(info: &ClientInfo) -> usize {
    16 + ClientId::TEXT_LEN
        + info.user.len()
        + info.conn_info.as_ref().map_or(0, |b| b.len())
        + info.chan_info.as_ref().map_or(0, |b| b.len())
}

/// A publication as stored (without its offset, which the store assigns).
pub fn encode_publication(p: &Publication) -> Bytes {
    let mut out =
        BytesMut::with_capacity(10 + p.info.as_deref().map_or(0, info_len) + p.data.len());
    out.put_u8(VERSION);
    out.put_u64_le(p.time_ms);
    out.put_u8(u8::from(p.info.is_some()));
    if let Some(info) = &p.info {
        put_info(&mut out, info);
    }
    out.put_slice(&p.data);
    out.freeze()
}

/// A client info as stored (presence) or announced (join/leave).
pub fn encode_info(info: &ClientInfo) -> Bytes {
    let mut out = BytesMut::with_capacity(info_len(info));
    put_info(&mut out, info);
    out.freeze()
}

/// A reader over a shared buffer: fields are slices of it, not copies.
struct Reader {
    buf: Bytes,
}

impl Reader {
    fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError("truncated"));
        }
        Ok(self.buf.split_to(n))
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(u64::from_le_bytes(a))
    }

    fn field(&mut self) -> Result<Option<Bytes>, DecodeError> {
        match self.u32()? {
            ABSENT => Ok(None),
            n => self.take(n as usize).map(Some),
        }
    }

    fn text(&mut self) -> Result<Arc<str>, DecodeError> {
        let b = self.field()?.ok_or(DecodeError("missing text field"))?;
        std::str::from_utf8(&b)
            .map(Arc::from)
            .map_err(|_| DecodeError("text field is not UTF-8"))
    }

    fn info(&mut self) -> Result<ClientInfo, DecodeError> {
        let client = self.field()?.ok_or(DecodeError("missing client id"))?;
        Ok(ClientInfo {
            client: std::str::from_utf8(&client)
                .ok()
                .and_then(ClientId::parse)
                .ok_or(DecodeError("client id is not a UUID"))?,
            user: self.text()?,
            conn_info: self.field()?.map(|b| Arc::from(&b[..])),
            chan_info: self.field()?.map(|b| Arc::from(&b[..])),
        })
    }
}

/// Reads a stored publication; `offset` is the one the store gave it.
pub fn decode_publication(body: Bytes, offset: u64) -> Result<Publication, DecodeError> {
    let mut r = Reader { buf: body };
    if r.u8()? != VERSION {
        return Err(DecodeError("unknown version"));
    }
    let time_ms = r.u64()?;
    let info = match r.u8()? {
        0 => None,
        1 => Some(Arc::new(r.info()?)),
        _ => return Err(DecodeError("bad flags")),
    };
    Ok(Publication {
        offset,
        data: r.buf,
        info,
        time_ms,
    })
}

/// Reads a stored or announced client info.
pub fn decode_info(body: Bytes) -> Result<ClientInfo, DecodeError> {
    let mut r = Reader { buf: body };
    let info = r.info()?;
    if !r.buf.is_empty() {
        return Err(DecodeError("trailing bytes after a client info"));
    }
    Ok(info)
}

/// The message announcing a publication of a channel without history.
pub fn publication_message(body: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + body.len());
    out.put_slice(b"p0::");
    out.put_slice(body);
    out.freeze()
}

/// The message announcing a join (`true`) or a leave.
pub fn presence_message(join: bool, info: &ClientInfo) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + info_len(info));
    out.put_u8(if join { b'j' } else { b'l' });
    put_info(&mut out, info);
    out.freeze()
}

/// Reads a message received on a channel.
pub fn decode_message(mut msg: Bytes) -> Result<ChannelMessage, DecodeError> {
    if msg.is_empty() {
        return Err(DecodeError("empty message"));
    }
    let kind = msg.split_to(1)[0];
    match kind {
        b'p' => {
            let colon = |b: &Bytes| b.iter().position(|&c| c == b':');
            let i = colon(&msg).ok_or(DecodeError("no offset"))?;
            let offset = std::str::from_utf8(&msg[..i])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or(DecodeError("bad offset"))?;
            let mut rest = msg.split_off(i + 1);
            let j = colon(&rest).ok_or(DecodeError("no epoch"))?;
            let epoch = std::str::from_utf8(&rest[..j])
                .map_err(|_| DecodeError("epoch is not UTF-8"))?
                .into();
            let body = rest.split_off(j + 1);
            Ok(ChannelMessage::Publication(
                decode_publication(body, offset)?,
                epoch,
            ))
        }
        b'j' => Ok(ChannelMessage::Join(decode_info(msg)?)),
        b'l' => Ok(ChannelMessage::Leave(decode_info(msg)?)),
        _ => Err(DecodeError("unknown message kind")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> ClientInfo {
        ClientInfo {
            client: ClientId::random(),
            user: "ann".into(),
            conn_info: Some(Arc::from(&b"{\"a\":1}"[..])),
            chan_info: None,
        }
    }

    #[test]
    fn publications_round_trip_with_and_without_a_publisher() {
        for info in [None, Some(Arc::new(info()))] {
            let p = Publication {
                offset: 0,
                data: Bytes::from_static(b"{\"x\":\"y:z\"}"),
                info,
                time_ms: 1_700_000_000_123,
            };
            let body = encode_publication(&p);
            let back = decode_publication(body.clone(), 42).unwrap();
            assert_eq!(back.offset, 42);
            assert_eq!(back.data, p.data);
            assert_eq!(back.info, p.info);
            assert_eq!(back.time_ms, p.time_ms);

            // As the history script frames it, and as a channel without history.
            let mut framed = b"p17:AbCd:".to_vec();
            framed.extend_from_slice(&body);
            match decode_message(framed.into()).unwrap() {
                ChannelMessage::Publication(q, epoch) => {
                    assert_eq!((q.offset, &*epoch), (17, "AbCd"));
                    assert_eq!(q.data, p.data);
                }
                other => panic!("{other:?}"),
            }
            match decode_message(publication_message(&body)).unwrap() {
                ChannelMessage::Publication(q, epoch) => {
                    assert_eq!((q.offset, &*epoch), (0, ""));
                    assert_eq!(q.info, p.info);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn joins_and_leaves_round_trip() {
        let i = info();
        assert_eq!(
            decode_message(presence_message(true, &i)).unwrap(),
            ChannelMessage::Join(i.clone())
        );
        assert_eq!(
            decode_message(presence_message(false, &i)).unwrap(),
            ChannelMessage::Leave(i.clone())
        );
        assert_eq!(decode_info(encode_info(&i)).unwrap(), i);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let body = encode_publication(&Publication::new(
            Bytes::from_static(b"1"),
            Some(Arc::new(info())),
        ));
        // Every truncation of a valid message, and a few foreign ones.
        for n in 0..body.len() {
            let _ = decode_publication(body.slice(..n), 1);
        }
        let info = encode_info(&info());
        for n in 0..info.len() {
            assert!(decode_info(info.slice(..n)).is_err());
        }
        for bad in [
            &b""[..],
            b"x",
            b"p",
            b"pabc:e:",
            b"p1:",
            b"p1:e:",
            b"p18446744073709551616:e:",
            b"j\xff\xff\xff\x7f",
        ] {
            assert!(decode_message(Bytes::from_static(bad)).is_err(), "{bad:?}");
        }
    }
}
