//! permessage-deflate (RFC 7692): negotiation and the per-message codec.
//!
//! Negotiation parses `Sec-WebSocket-Extensions` (several offers, quoted
//! values, all four parameters) and settles on [`DeflateParams`]. The codec
//! compresses a message with a sync flush and strips the trailing
//! `00 00 ff ff`; it inflates piece by piece, enforcing the message size
//! limit on the *inflated* bytes while inflating, so a small compressed
//! message cannot make us allocate more than the limit.
//!
//! Window bits: zlib cannot deflate with an 8-bit window and maps 8 to 9; its
//! encoder never emits a distance beyond `window - 262` (250 for 9 bits), so
//! its output still decodes with a 256-byte window. Inflation always uses a
//! window at least as large as the peer's, which decodes anything it sends.
//!
//! Without context takeover a codec keeps no zlib state between messages:
//! it borrows a reset one from a small per-thread pool for the message and
//! gives it back after (see [`pool`]). An idle connection then costs no
//! zlib memory at all (with takeover it keeps about 340 KB: the compressor's
//! window and hash tables and the inflater's 32 KiB window), and a message
//! costs a reset instead of building and freeing a state.
//!
//! Negotiation is in `negotiate.rs`, the codec in `codec.rs`, the pool in
//! `pool.rs`; everything is used from here, as `deflate::…`.

mod codec;
mod negotiate;
pub mod pool;

pub use codec::{Deflater, Inflater, Side};
pub use negotiate::{
    accept_response, client_offer, negotiate_server, parse_extensions, DeflateParams,
    ExtensionOffer, EXTENSION_NAME,
};
