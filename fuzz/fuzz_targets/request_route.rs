//! See `duplex_server::fuzzing::request_route` for the input format and the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duplex_server::fuzzing::request_route(data));
