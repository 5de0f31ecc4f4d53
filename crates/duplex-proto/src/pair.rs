//! An in-memory client/server pair for deterministic tests: both ends run
//! the real opening handshake, then [`Pair::transfer`] moves queued bytes
//! across, optionally in chunks of chosen sizes, with a virtual clock.

use crate::config::Config;
use crate::connection::{Connection, Role};
use crate::error::Error;
use crate::handshake::client::{ClientHandshake, ClientRequest};
use crate::handshake::server::{accept, parse_request, UpgradeRequest};
use crate::message::Event;
use bytes::BytesMut;
use std::time::{Duration, Instant};

/// A connected client and server.
#[derive(Debug)]
pub struct Pair {
    /// The client end.
    pub client: Connection,
    /// The server end.
    pub server: Connection,
    /// Bytes received by the client and not yet consumed.
    pub client_in: BytesMut,
    /// Bytes received by the server and not yet consumed.
    pub server_in: BytesMut,
    /// The virtual clock.
    pub now: Instant,
    /// Errors each end's `receive` returned (client, server).
    pub errors: (Vec<Error>, Vec<Error>),
}

impl Pair {
    /// Runs the opening handshake between a client and a server with these
    /// configurations (deflate is negotiated if both enable it).
    pub fn new(client_cfg: Config, server_cfg: Config) -> Pair {
        let req = ClientRequest {
            host: "localhost".into(),
            target: "/".into(),
            ..Default::default()
        };
        let (hs, request) = ClientHandshake::new(&req, &client_cfg);
        let (parsed, _) = parse_request(&request, &server_cfg)
            .expect("valid request")
            .expect("complete request");
        let up = UpgradeRequest::validate(parsed).expect("valid upgrade");
        let acc = accept(&up, &server_cfg, None, &[]);
        let (resp, _) = hs
            .parse_response(&acc.response)
            .expect("valid response")
            .expect("complete");
        Pair {
            client: Connection::new(Role::Client, client_cfg, resp.deflate),
            server: Connection::new(Role::Server, server_cfg, acc.deflate),
            client_in: BytesMut::new(),
            server_in: BytesMut::new(),
            now: Instant::now(),
            errors: (Vec::new(), Vec::new()),
        }
    }

    /// Moves all queued bytes both ways until quiet, delivering at most
    /// `chunk` bytes per `receive` call.
    pub fn transfer_chunked(&mut self, chunk: usize) {
        let chunk = chunk.max(1);
        loop {
            let a = Self::pump(
                &mut self.client,
                &mut self.server,
                &mut self.server_in,
                chunk,
                &mut self.errors.1,
            );
            let b = Self::pump(
                &mut self.server,
                &mut self.client,
                &mut self.client_in,
                chunk,
                &mut self.errors.0,
            );
            self.client.handle_timeout(self.now);
            self.server.handle_timeout(self.now);
            if !a && !b {
                return;
            }
        }
    }

    /// Moves all queued bytes both ways until quiet.
    pub fn transfer(&mut self) {
        self.transfer_chunked(usize::MAX);
    }

    fn pump(
        from: &mut Connection,
        to: &mut Connection,
        inbuf: &mut BytesMut,
        chunk: usize,
        errs: &mut Vec<Error>,
    ) -> bool {
        let mut moved = false;
        while from.outbound_len() > 0 {
            let data = from.outbound();
            let n = data.len().min(chunk);
            inbuf.extend_from_slice(&data[..n]);
            from.consume_outbound(n);
            moved = true;
            if let Err(e) = to.receive(inbuf) {
                errs.push(e);
            }
        }
        moved
    }

    /// Advances the virtual clock and fires timers on both ends.
    pub fn advance(&mut self, d: Duration) {
        self.now += d;
        self.client.handle_timeout(self.now);
        self.server.handle_timeout(self.now);
    }

    /// Drains the client's events.
    pub fn client_events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.client.poll_event()).collect()
    }

    /// Drains the server's events.
    pub fn server_events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }
}
