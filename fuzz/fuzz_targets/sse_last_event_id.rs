//! See `duplex_server::fuzzing::sse_last_event_id` for the input format and the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duplex_server::fuzzing::sse_last_event_id(data));
