//! `duplex-proto`: the WebSocket protocol as a pure state machine.
//!
//! RFC 6455 framing, the opening and closing handshakes, UTF-8 validation and
//! limits, and RFC 7692 permessage-deflate — with no sockets and no async
//! runtime. Bytes go in, events and bytes come out, and time is passed in, so
//! every behaviour is deterministic and can be fuzzed.
//!
//! ```
//! use duplex_proto::{pair::Pair, Message, Event};
//! let mut p = Pair::new(Default::default(), Default::default());
//! p.client.send(Message::text("hi")).unwrap();
//! p.transfer();
//! assert_eq!(p.server.poll_event(), Some(Event::Message(Message::text("hi"))));
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod close;
pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
/// Fuzz-target bodies (`fuzz/`), also run over the seed corpora as tests.
pub mod fuzzing;
pub mod handshake;
pub mod mask;
pub mod message;
mod outbound;
pub mod pair;
pub mod prepared;
pub mod utf8;

pub use close::{CloseCode, CloseFrame};
pub use config::{Config, DeflateConfig};
pub use connection::{Connection, Role, State};
pub use error::Error;
pub use message::{Event, Message};
pub use prepared::PreparedMessage;
pub use utf8::Utf8Bytes;
