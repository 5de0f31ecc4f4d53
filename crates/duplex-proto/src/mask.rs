//! Payload masking (RFC 6455 §5.3).
//!
//! XOR with a 4-byte key, from the `duplex-mask` crate: eight bytes at a
//! time in safe Rust, which LLVM turns into vector instructions, compiled
//! for AVX2 as well and taken for payloads of 256 bytes or more when the
//! CPU has it (that crate holds the one `unsafe` call it takes). `offset`
//! is the position of `buf[0]` within the frame payload, so a payload can
//! be unmasked piece by piece as it arrives.

pub use duplex_mask::apply_mask;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_example() {
        // RFC 6455 §5.7: "Hello" masked with 37 fa 21 3d.
        let mut b = *b"Hello";
        apply_mask(&mut b, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(b, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn every_offset_and_length_up_to_70() {
        let key = [1, 2, 3, 250];
        for len in 0..70 {
            for offset in 0..9 {
                let data: Vec<u8> = (0..len as u8).collect();
                let mut a = data.clone();
                let mut b = data.clone();
                apply_mask(&mut a, key, offset);
                naive(&mut b, key, offset);
                assert_eq!(a, b, "len {len} offset {offset}");
            }
        }
    }

    proptest! {
        #[test]
        fn equals_naive_xor(data in proptest::collection::vec(any::<u8>(), 0..300),
                            key in any::<[u8; 4]>(), offset in 0usize..1000, start in 0usize..300) {
            let start = start.min(data.len());
            let mut a = data.clone();
            let mut b = data.clone();
            apply_mask(&mut a[start..], key, offset);
            naive(&mut b[start..], key, offset);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn piecewise_equals_whole(data in proptest::collection::vec(any::<u8>(), 0..200),
                                  key in any::<[u8; 4]>(), cut in 0usize..200) {
            let cut = cut.min(data.len());
            let mut a = data.clone();
            let mut b = data.clone();
            apply_mask(&mut a, key, 0);
            apply_mask(&mut b[..cut], key, 0);
            apply_mask(&mut b[cut..], key, cut);
            prop_assert_eq!(a, b);
        }
    }
}
