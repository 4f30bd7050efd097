//! Deterministic pseudo-random blob contents that are never held in memory
//! as a whole: any byte range of a blob can be produced on its own, so a
//! 1 GiB blob can be pushed in chunks, resumed, or hashed in a streaming pass.

use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// Generation happens in pieces of this size (one body frame).
pub const PIECE: usize = 256 * 1024;

/// Identifies one blob's contents: the same key always gives the same bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobKey {
    pub seed: u64,
    pub index: u64,
    pub size: u64,
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl BlobKey {
    fn stream_id(&self) -> u64 {
        splitmix64(self.seed ^ splitmix64(self.index.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ self.size))
    }

    /// Writes the blob's bytes `offset..offset + buf.len()` into `buf`.
    /// Each 8-byte word is a function of its position alone (random access).
    pub fn fill(&self, offset: u64, buf: &mut [u8]) {
        let id = self.stream_id();
        let word = |i: u64| splitmix64(id ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
        let mut pos = offset;
        let mut out = &mut buf[..];
        // Unaligned head.
        let head = (pos % 8) as usize;
        if head != 0 && !out.is_empty() {
            let w = word(pos / 8);
            let n = (8 - head).min(out.len());
            out[..n].copy_from_slice(&w[head..head + n]);
            pos += n as u64;
            out = &mut out[n..];
        }
        let mut chunks = out.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&word(pos / 8));
            pos += 8;
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let w = word(pos / 8);
            let n = tail.len();
            tail.copy_from_slice(&w[..n]);
        }
    }

    /// The bytes `offset..offset + len` as one buffer (len should be at most [`PIECE`]).
    pub fn piece(&self, offset: u64, len: usize) -> Bytes {
        let mut v = vec![0u8; len];
        self.fill(offset, &mut v);
        Bytes::from(v)
    }

    /// `sha256:<hex>` of the whole blob, computed in a streaming pass.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        let mut buf = vec![0u8; PIECE];
        let mut off = 0;
        while off < self.size {
            let n = (self.size - off).min(PIECE as u64) as usize;
            self.fill(off, &mut buf[..n]);
            h.update(&buf[..n]);
            off += n as u64;
        }
        format!("sha256:{}", hex::encode(h.finalize()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_agree_with_the_whole() {
        let k = BlobKey {
            seed: 7,
            index: 3,
            size: 1000,
        };
        let mut whole = vec![0u8; 1000];
        k.fill(0, &mut whole);
        for (start, len) in [(0, 1), (1, 7), (3, 20), (8, 8), (13, 987), (999, 1)] {
            let mut part = vec![0u8; len];
            k.fill(start as u64, &mut part);
            assert_eq!(part, &whole[start..start + len], "range {start}+{len}");
        }
        assert_ne!(&whole[..8], &whole[8..16]);
    }

    #[test]
    fn keys_differ_and_digest_matches() {
        let a = BlobKey {
            seed: 1,
            index: 0,
            size: PIECE as u64 + 5,
        };
        let b = BlobKey { index: 1, ..a };
        assert_ne!(a.piece(0, 64), b.piece(0, 64));
        let mut whole = vec![0u8; a.size as usize];
        a.fill(0, &mut whole);
        let expect = format!("sha256:{}", hex::encode(Sha256::digest(&whole)));
        assert_eq!(a.digest(), expect);
        assert_eq!(a.digest(), a.digest());
    }
}
