//! Payload masking (RFC 6455 §5.3).
//!
//! XOR with a 4-byte key, from the `duplex-mask` crate: eight bytes at a
//! time in safe Rust, which LLVM turns into vector instructions, compiled
//! for AVX2 as well and taken for payloads of 256 bytes or more when the
//! CPU has it (that crate holds the one `unsafe` call it takes). `offset`
//! is the position of `buf[0]` within the frame payload, so a payload can
//! be unmasked piece by piece as it arrives.

pub use duplex_mask::apply_mask;
