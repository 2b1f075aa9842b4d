//! The primitives of the suites, keyed once per context and used in place: AES in counter mode
//! (128- and 256-bit keys), HMAC-SHA1, and AES-GCM built from the two (counter mode and GHASH).

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{
    BlockCipher, BlockEncrypt, InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper,
    consts::U16,
};
use aes::{Aes128Enc, Aes256Enc};
use ctr::CtrCore;
use ctr::flavors::Ctr128BE;
use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::key::MasterKey;

const BLOCK_LEN: usize = 16;
/// Payloads up to this length get their keystream from one `encrypt_blocks` call on the stack.
const SHORT_LEN: usize = 256;
/// The GCM tag (RFC 7714 §12: 16 octets for both AEAD suites).
pub const GCM_TAG_LEN: usize = 16;

/// AES in counter mode as RFC 3711 §4.1.1 defines it: keystream block `j` is `E(k, IV + j)`,
/// with a 128-bit key or (RFC 6188) a 256-bit one.
///
/// The round keys are wiped on drop (the `aes` crate's `zeroize` feature). AES-256's schedule is
/// boxed: it is larger, and most contexts are AES-128 ones, which keep theirs inline (boxing
/// AES-128 too would cost every packet a pointer chase for nothing).
#[allow(clippy::large_enum_variant)]
pub enum AesCm {
    /// AES-128.
    Aes128(Aes128Enc),
    /// AES-256.
    Aes256(Box<Aes256Enc>),
}

impl AesCm {
    /// Keys the cipher. `key` must be 16 or 32 bytes (the suite table guarantees it).
    pub fn new(key: &[u8]) -> Self {
        match key.len() {
            32 => Self::Aes256(Box::new(Aes256Enc::new(GenericArray::from_slice(key)))),
            _ => Self::Aes128(Aes128Enc::new(GenericArray::from_slice(key))),
        }
    }

    /// XORs the keystream that starts at counter block `iv` into `data`, in place.
    ///
    /// RFC 3711 §4.1.1: block j is `E(k, IV + j mod 2^128)`, a 128-bit big-endian counter.
    pub fn apply_keystream(&self, iv: u128, data: &mut [u8]) {
        match self {
            Self::Aes128(c) => keystream(c, iv, data),
            Self::Aes256(c) => keystream(c.as_ref(), iv, data),
        }
    }

    /// `E(k, block)`: one block, for GCM's tag mask.
    fn encrypt_block(&self, block: u128) -> [u8; BLOCK_LEN] {
        let mut b = GenericArray::from(block.to_be_bytes());
        match self {
            Self::Aes128(c) => c.encrypt_block(&mut b),
            Self::Aes256(c) => c.encrypt_block(&mut b),
        }
        b.into()
    }
}

fn keystream<C>(cipher: &C, iv: u128, data: &mut [u8])
where
    C: BlockEncrypt + BlockCipher<BlockSize = U16> + Clone,
{
    if data.len() > SHORT_LEN {
        // The `ctr` crate pipelines long runs better; its set-up costs more than short
        // packets (a G.711 payload) gain, measured in `bench/benches/primitives.rs`.
        let core = CtrCore::<C, Ctr128BE>::inner_iv_init(cipher.clone(), &iv.to_be_bytes().into());
        StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
        return;
    }
    let mut blocks = [GenericArray::default(); SHORT_LEN / BLOCK_LEN];
    let n = data.len().div_ceil(BLOCK_LEN);
    for (j, block) in blocks[..n].iter_mut().enumerate() {
        *block = GenericArray::from(iv.wrapping_add(j as u128).to_be_bytes());
    }
    cipher.encrypt_blocks(&mut blocks[..n]);
    let (whole, tail) = data.as_chunks_mut::<BLOCK_LEN>();
    for (bytes, keystream) in whole.iter_mut().zip(&blocks) {
        let ks: [u8; BLOCK_LEN] = (*keystream).into();
        *bytes = (u128::from_ne_bytes(*bytes) ^ u128::from_ne_bytes(ks)).to_ne_bytes();
    }
    if let Some(last) = blocks.get(whole.len()) {
        for (b, k) in tail.iter_mut().zip(last) {
            *b ^= k;
        }
    }
}

/// AES-GCM (NIST SP 800-38D) with a 96-bit IV and a 16-byte tag, as RFC 7714 uses it, in place:
/// counter mode from `IV ‖ 2` (`IV ‖ 1` masks the tag) and GHASH under `H = E(k, 0¹²⁸)`. The
/// associated data may come in pieces (SRTCP's header and its E‖index word lie apart), and a
/// tag can be checked without decrypting (pass-through).
///
/// The counter is incremented over all 128 bits where GCM's inc32 takes the low 32: the same for
/// every packet, which is far shorter than 2³² blocks from a start of 2.
pub struct AesGcm {
    cipher: AesCm,
    ghash: GHash,
}

impl AesGcm {
    /// Keys the AEAD. `key` must be 16 or 32 bytes.
    pub fn new(key: &[u8]) -> Self {
        let cipher = AesCm::new(key);
        let mut h = cipher.encrypt_block(0);
        let ghash = GHash::new(&ghash::Key::from(h));
        h.zeroize();
        Self { cipher, ghash }
    }

    /// Encrypts `data` in place under the 96-bit `iv` and returns the tag over `aad` (the
    /// pieces taken as one string) and the ciphertext.
    pub fn seal(&self, iv: u128, aad: &[&[u8]], data: &mut [u8]) -> [u8; GCM_TAG_LEN] {
        self.cipher.apply_keystream(counter(iv, 2), data);
        self.tag(iv, aad, data)
    }

    /// True when `tag` is the tag of `aad` and the ciphertext `data` under `iv` (compared in
    /// constant time). Nothing is decrypted.
    pub fn verify(&self, iv: u128, aad: &[&[u8]], data: &[u8], tag: &[u8]) -> bool {
        tag.len() == GCM_TAG_LEN && bool::from(self.tag(iv, aad, data).ct_eq(tag))
    }

    /// Decrypts `data` in place (after [`Self::verify`]).
    pub fn decrypt(&self, iv: u128, data: &mut [u8]) {
        self.cipher.apply_keystream(counter(iv, 2), data);
    }

    fn tag(&self, iv: u128, aad: &[&[u8]], ct: &[u8]) -> [u8; GCM_TAG_LEN] {
        let mut g = Absorb {
            ghash: self.ghash.clone(),
            buf: [0; BLOCK_LEN],
            len: 0,
        };
        let mut aad_len = 0u64;
        for piece in aad {
            g.feed(piece);
            aad_len += piece.len() as u64;
        }
        g.pad();
        g.feed(ct);
        g.pad();
        let lengths = (u128::from(aad_len * 8) << 64) | u128::from(ct.len() as u64 * 8);
        g.ghash.update(&[ghash::Block::from(lengths.to_be_bytes())]);
        let s: [u8; BLOCK_LEN] = g.ghash.finalize().into();
        let mask = self.cipher.encrypt_block(counter(iv, 1));
        (u128::from_ne_bytes(s) ^ u128::from_ne_bytes(mask)).to_ne_bytes()
    }
}

/// The counter block `IV ‖ n` (a 96-bit IV).
fn counter(iv: u128, n: u32) -> u128 {
    (iv << 32) | u128::from(n)
}

/// GHASH over a string given in pieces: whole blocks go straight from the caller's slices.
struct Absorb {
    ghash: GHash,
    buf: [u8; BLOCK_LEN],
    len: usize,
}

impl Absorb {
    fn feed(&mut self, mut data: &[u8]) {
        if self.len > 0 {
            let take = data.len().min(BLOCK_LEN - self.len);
            self.buf[self.len..self.len + take].copy_from_slice(&data[..take]);
            self.len += take;
            data = &data[take..];
            if self.len < BLOCK_LEN {
                return;
            }
            self.ghash.update(&[ghash::Block::from(self.buf)]);
            self.len = 0;
        }
        let whole = data.len() - data.len() % BLOCK_LEN;
        self.ghash.update_padded(&data[..whole]);
        let rest = &data[whole..];
        self.buf[..rest.len()].copy_from_slice(rest);
        self.len = rest.len();
    }

    /// Zero-pads a partial block (GHASH pads the associated data and the ciphertext apart).
    fn pad(&mut self) {
        if self.len > 0 {
            self.buf[self.len..].fill(0);
            self.ghash.update(&[ghash::Block::from(self.buf)]);
            self.len = 0;
        }
    }
}

const SHA1_BLOCK_LEN: usize = 64;
const SHA1_LEN: usize = 20;
const SHA1_INIT: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

/// HMAC-SHA1 (RFC 2104) with the keyed inner and outer states computed once per context, so a
/// packet costs only the compressions of its own bytes. The states are wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HmacSha1 {
    inner: [u32; 5],
    outer: [u32; 5],
}

impl HmacSha1 {
    /// Keys the MAC.
    pub fn new(key: &[u8]) -> Self {
        let mut block = [0u8; SHA1_BLOCK_LEN];
        if key.len() > SHA1_BLOCK_LEN {
            let mut hashed = Sha1Stream::new(SHA1_INIT, 0);
            hashed.update(key);
            block[..SHA1_LEN].copy_from_slice(&hashed.finish());
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut pad = block.map(|b| b ^ 0x36);
        let mut inner = SHA1_INIT;
        compress(&mut inner, &pad);
        pad = block.map(|b| b ^ 0x5c);
        let mut outer = SHA1_INIT;
        compress(&mut outer, &pad);
        block.zeroize();
        pad.zeroize();
        Self { inner, outer }
    }

    /// The 20-byte MAC of `msg ‖ trailer` (SRTP passes the ROC as the trailer, RFC 3711 §4.2).
    pub fn sign(&self, msg: &[u8], trailer: &[u8]) -> [u8; SHA1_LEN] {
        let mut inner = Sha1Stream::new(self.inner, SHA1_BLOCK_LEN as u64);
        inner.update(msg);
        inner.update(trailer);
        let digest = inner.finish();
        let mut outer = Sha1Stream::new(self.outer, SHA1_BLOCK_LEN as u64);
        outer.update(&digest);
        outer.finish()
    }
}

impl std::fmt::Debug for HmacSha1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacSha1(<redacted>)")
    }
}

fn compress(state: &mut [u32; 5], block: &[u8; SHA1_BLOCK_LEN]) {
    sha1::block_api::compress(state, std::slice::from_ref(block));
}

/// A SHA-1 computation that hashes whole blocks straight from the caller's slice.
struct Sha1Stream {
    state: [u32; 5],
    buf: [u8; SHA1_BLOCK_LEN],
    buf_len: usize,
    total_len: u64,
}

impl Sha1Stream {
    fn new(state: [u32; 5], already_hashed: u64) -> Self {
        Self {
            state,
            buf: [0; SHA1_BLOCK_LEN],
            buf_len: 0,
            total_len: already_hashed,
        }
    }

    fn update(&mut self, mut data: &[u8]) {
        self.total_len += data.len() as u64;
        if self.buf_len > 0 {
            let take = data.len().min(SHA1_BLOCK_LEN - self.buf_len);
            self.buf[self.buf_len..self.buf_len + take].copy_from_slice(&data[..take]);
            self.buf_len += take;
            data = &data[take..];
            if self.buf_len < SHA1_BLOCK_LEN {
                return;
            }
            compress(&mut self.state, &self.buf);
            self.buf_len = 0;
        }
        let (blocks, rest) = data.as_chunks::<SHA1_BLOCK_LEN>();
        if !blocks.is_empty() {
            sha1::block_api::compress(&mut self.state, blocks);
        }
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    fn finish(mut self) -> [u8; SHA1_LEN] {
        let bit_len = self.total_len * 8;
        self.buf[self.buf_len] = 0x80;
        self.buf[self.buf_len + 1..].fill(0);
        if self.buf_len + 1 > SHA1_BLOCK_LEN - 8 {
            compress(&mut self.state, &self.buf);
            self.buf.fill(0);
        }
        self.buf[SHA1_BLOCK_LEN - 8..].copy_from_slice(&bit_len.to_be_bytes());
        compress(&mut self.state, &self.buf);
        let mut out = [0; SHA1_LEN];
        for (o, w) in out.chunks_exact_mut(4).zip(self.state) {
            o.copy_from_slice(&w.to_be_bytes());
        }
        out
    }
}

/// RFC 3711 §4.3.1 key derivation with a key derivation rate of 0 (so r = 0): the first
/// `out.len()` bytes of the AES-CM keystream under the master key at `IV = (label‖0⁴⁸ XOR salt)·2¹⁶`.
/// The PRF's key length is the master key's (RFC 6188 §3: AES-256 for the 256-bit suites); a
/// 96-bit GCM master salt is the PRF's 112-bit salt with two zero octets after it (RFC 7714 §11).
pub fn derive_session_key(master: &MasterKey, label: u8, out: &mut [u8]) {
    let cipher = AesCm::new(master.master_key());
    let salt = master.master_salt();
    let x = (salt_to_u128(salt) << (8 * (14 - salt.len()))) ^ (u128::from(label) << 48);
    out.fill(0);
    cipher.apply_keystream(x << 16, out);
}

/// A salt of up to 14 bytes as a right-aligned big-endian integer.
pub(super) fn salt_to_u128(salt: &[u8]) -> u128 {
    salt.iter()
        .fold(0u128, |acc, &b| (acc << 8) | u128::from(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 2202 §3, HMAC-SHA-1 test cases 1, 2, 6 and 7 (the last two have 80-byte keys).
    #[test]
    fn hmac_sha1_rfc2202() {
        let cases: [(&[u8], &[u8], &str); 4] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data",
                "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
            ),
        ];
        for (key, msg, want) in cases {
            assert_eq!(hex::encode(HmacSha1::new(key).sign(msg, &[])), want);
            // Splitting the message between `msg` and `trailer` must not change the MAC.
            for split in [0, 1, msg.len() / 2, msg.len()] {
                let (a, b) = msg.split_at(split);
                assert_eq!(hex::encode(HmacSha1::new(key).sign(a, b)), want);
            }
        }
    }

    // RFC 2202 case 3: 50 bytes of 0xdd, so padding needs its own block at some split points.
    #[test]
    fn hmac_sha1_rfc2202_case3_all_lengths() {
        let mac = HmacSha1::new(&[0xaa; 20]);
        assert_eq!(
            hex::encode(mac.sign(&[0xdd; 50], &[])),
            "125d7342b9ac11cd91a39af48aa17b4f63f175d3"
        );
    }
}
