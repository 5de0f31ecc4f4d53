//! `duplex-proto`: the WebSocket protocol as a pure state machine.
//!
//! RFC 6455 framing, the opening and closing handshakes, UTF-8 validation and
//! limits, and RFC 7692 permessage-deflate — with no sockets and no async
//! runtime. Bytes go in, events and bytes come out, and time is passed in, so
//! every behaviour is deterministic and can be fuzzed.
//!
//! ```
//! use bytes::BytesMut;
//! use duplex_proto::{Config, Connection, Event, Message, Role};
//!
//! // Both ends after the opening handshake (see `handshake`), without
//! // permessage-deflate.
//! let mut client = Connection::new(Role::Client, Config::default(), None);
//! let mut server = Connection::new(Role::Server, Config::default(), None);
//!
//! client.send(Message::text("hi")).unwrap();
//! // What a driver does with a socket: write the client's outbound bytes,
//! // read them on the other side.
//! let mut wire = BytesMut::from(client.outbound());
//! client.consume_outbound(wire.len());
//! server.receive(&mut wire).unwrap();
//! assert_eq!(server.poll_event(), Some(Event::Message(Message::text("hi"))));
//! ```
//!
//! Test scaffolding — an in-memory client/server pair with a virtual clock
//! (`pair`), the fuzz-target bodies (`fuzzing`) and `frame::encode_raw` —
//! is compiled only with the `test-support` feature, which no user build
//! needs.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod budget;
pub mod close;
pub mod config;
pub mod connection;
pub mod deflate;
pub mod error;
pub mod frame;
/// Fuzz-target bodies (`fuzz/`), also run over the seed corpora as tests.
/// Only with the `test-support` feature.
#[cfg(feature = "test-support")]
pub mod fuzzing;
mod growth;
pub mod handshake;
pub mod mask;
pub mod message;
mod outbound;
/// An in-memory client/server pair for tests. Only with the `test-support`
/// feature.
#[cfg(feature = "test-support")]
pub mod pair;
pub mod prepared;
pub mod utf8;

pub use budget::MemoryBudget;
pub use close::{CloseCode, CloseFrame};
pub use config::{Config, DeflateConfig};
pub use connection::{Connection, Role, State};
pub use error::{Error, HeaderError};
pub use message::{Event, Message};
pub use prepared::{PreparedMessage, SharedFraming};
pub use utf8::Utf8Bytes;
