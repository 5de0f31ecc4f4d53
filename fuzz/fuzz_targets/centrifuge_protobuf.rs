//! See `duplex_server::fuzzing::centrifuge_protobuf` for the input format and the property.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| duplex_server::fuzzing::centrifuge_protobuf(data));
