//! See `duplex_proto::fuzzing::frame_header` for the input format and the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duplex_proto::fuzzing::frame_header(data));
