//! Payload masking (RFC 6455 §5.3).
//!
//! XOR with a 4-byte key, eight bytes at a time in safe Rust; LLVM turns the
//! loop into vector instructions. `offset` is the position of `buf[0]` within
//! the frame payload, so a payload can be unmasked piece by piece as it arrives.

/// XORs `buf` in place with `key`, starting at payload offset `offset`.
#[inline]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    let r = offset & 3;
    let key = [key[r], key[(r + 1) & 3], key[(r + 2) & 3], key[(r + 3) & 3]];
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let v = u64::from_ne_bytes(word) ^ wide;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

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
