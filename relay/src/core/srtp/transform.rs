//! The per-packet transform a context's session keys drive: AES counter mode with HMAC-SHA1
//! (RFC 3711, RFC 6188) or AES-GCM (RFC 7714), and where each puts its tag and the SRTCP
//! E‖index word. The context decides which index a packet has; this only applies the keys.

use subtle::ConstantTimeEq;
use zeroize::Zeroize;

use super::SRTCP_INDEX_LEN;
use super::key::MasterKey;
use super::primitives::{AesCm, AesGcm, GCM_TAG_LEN, HmacSha1, derive_session_key, salt_to_u128};
use super::suite::CipherKind;
use crate::core::rtp::RTCP_HEADER_LEN;

/// RFC 3711 §3.4: the SRTCP index is 31 bits; past it the master key must not be used.
pub(super) const MAX_SRTCP_INDEX: u32 = 0x7fff_ffff;
/// The E flag of the SRTCP E‖index word.
pub(super) const SRTCP_E_FLAG: u32 = 0x8000_0000;

/// Session keys for RTP or for RTCP (RFC 3711 §4.3: labels 0-2 and 3-5; RFC 7714 §11 uses
/// the encryption key and salt labels only), and the transform they drive.
pub(super) struct SessionKeys {
    pub(super) transform: Transform,
    pub(super) salt: u128,
}

pub(super) enum Transform {
    /// AES-CM and HMAC-SHA1 (RFC 3711, RFC 6188).
    CmHmac { cipher: AesCm, auth: HmacSha1 },
    /// AES-GCM (RFC 7714).
    Gcm(AesGcm),
}

/// Where the parts of a protected SRTCP packet lie: RTCP, then (counter mode) E‖index and the
/// tag, or (AEAD, RFC 7714 §9.1) the tag and E‖index.
pub(super) struct SrtcpLayout {
    pub(super) rtcp_len: usize,
    pub(super) word_at: usize,
    tag_at: usize,
}

impl SessionKeys {
    pub(super) fn derive(master: &MasterKey, first_label: u8) -> Self {
        let p = master.suite().params();
        let mut key = [0u8; 32];
        let mut auth = [0u8; 20];
        let mut salt = [0u8; 14];
        derive_session_key(master, first_label, &mut key[..p.master_key_len]);
        derive_session_key(master, first_label + 2, &mut salt[..p.master_salt_len]);
        let transform = match p.cipher {
            CipherKind::AesCm => {
                derive_session_key(master, first_label + 1, &mut auth[..p.auth_key_len]);
                Transform::CmHmac {
                    cipher: AesCm::new(&key[..p.master_key_len]),
                    auth: HmacSha1::new(&auth[..p.auth_key_len]),
                }
            }
            CipherKind::AesGcm => Transform::Gcm(AesGcm::new(&key[..p.master_key_len])),
        };
        let keys = Self {
            transform,
            salt: salt_to_u128(&salt[..p.master_salt_len]),
        };
        key.zeroize();
        auth.zeroize();
        salt.zeroize();
        keys
    }

    /// The IV of the packet at `index` of `ssrc`. Counter mode (RFC 3711 §4.1.1):
    /// `(k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16)`. GCM (RFC 7714 §8.1, §9.1): the 96-bit
    /// `0⁸ ‖ SSRC ‖ ROC ‖ SEQ` (SRTCP: `0⁸ ‖ SSRC ‖ 0⁸ ‖ 0 ‖ index`) XOR the salt, which is
    /// the same sum.
    pub(super) fn iv(&self, ssrc: u32, index: u64) -> u128 {
        match self.transform {
            Transform::CmHmac { .. } => {
                (self.salt << 16) ^ (u128::from(ssrc) << 64) ^ (u128::from(index) << 16)
            }
            Transform::Gcm(_) => self.salt ^ (u128::from(ssrc) << 48) ^ u128::from(index),
        }
    }

    /// Encrypts (when `encrypt`) the RTP payload `buf[header_len..len]` at `index` and writes
    /// `tag_len` bytes of tag at `buf[len..]`.
    pub(super) fn seal_rtp(
        &self,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
        at: (u32, u64),
        tags: (bool, usize),
    ) {
        let (ssrc, index) = at;
        let (encrypt, tag_len) = tags;
        let iv = self.iv(ssrc, index);
        match &self.transform {
            Transform::CmHmac { cipher, auth } => {
                if encrypt {
                    cipher.apply_keystream(iv, &mut buf[header_len..len]);
                }
                if tag_len > 0 {
                    let mac = auth.sign(&buf[..len], &roc_bytes(index));
                    buf[len..len + tag_len].copy_from_slice(&mac[..tag_len]);
                }
            }
            Transform::Gcm(aead) => {
                // RFC 7714 §8.2: the header is the associated data, the payload the plaintext.
                let (header, rest) = buf.split_at_mut(header_len);
                let tag = aead.seal(iv, &[header], &mut rest[..len - header_len]);
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
            }
        }
    }

    /// True when the tag `pkt[auth_len..]` authenticates `pkt[..auth_len]` at `index`
    /// (`tag_len` 0: nothing to check). Constant time (RFC 3711 §4.2 leaves timing to us).
    pub(super) fn verify_rtp(
        &self,
        pkt: &[u8],
        header_len: usize,
        auth_len: usize,
        at: (u32, u64),
    ) -> bool {
        let (ssrc, index) = at;
        let tag = &pkt[auth_len..];
        match &self.transform {
            Transform::CmHmac { auth, .. } => {
                tag.is_empty() || {
                    let mac = auth.sign(&pkt[..auth_len], &roc_bytes(index));
                    mac[..tag.len()].ct_eq(tag).into()
                }
            }
            Transform::Gcm(aead) => aead.verify(
                self.iv(ssrc, index),
                &[&pkt[..header_len]],
                &pkt[header_len..auth_len],
                tag,
            ),
        }
    }

    /// Decrypts the RTP payload `pkt[header_len..auth_len]` at `index` (after its tag verified).
    pub(super) fn decrypt_rtp(
        &self,
        pkt: &mut [u8],
        header_len: usize,
        auth_len: usize,
        at: (u32, u64),
    ) {
        let iv = self.iv(at.0, at.1);
        let payload = &mut pkt[header_len..auth_len];
        match &self.transform {
            Transform::CmHmac { cipher, .. } => cipher.apply_keystream(iv, payload),
            Transform::Gcm(aead) => aead.decrypt(iv, payload),
        }
    }

    /// The parts of an SRTCP packet of `len` bytes with a `tag_len` tag, if it is long enough.
    pub(super) fn srtcp_layout(&self, len: usize, tag_len: usize) -> Option<SrtcpLayout> {
        let rtcp_len = len
            .checked_sub(SRTCP_INDEX_LEN + tag_len)
            .filter(|&n| n >= RTCP_HEADER_LEN)?;
        Some(match self.transform {
            Transform::CmHmac { .. } => SrtcpLayout {
                rtcp_len,
                word_at: rtcp_len,
                tag_at: rtcp_len + SRTCP_INDEX_LEN,
            },
            Transform::Gcm(_) => SrtcpLayout {
                rtcp_len,
                word_at: rtcp_len + tag_len,
                tag_at: rtcp_len,
            },
        })
    }

    /// Protects the RTCP packet `buf[..len]` with E‖index `word` (encrypting when E is set) and
    /// lays out the trailer as [`Self::srtcp_layout`] says; `end` is the packet's new length.
    pub(super) fn seal_rtcp(&self, buf: &mut [u8], len: usize, end: usize, ssrc: u32, word: u32) {
        let index = u64::from(word & MAX_SRTCP_INDEX);
        let encrypt = word & SRTCP_E_FLAG != 0;
        let iv = self.iv(ssrc, index);
        let word = word.to_be_bytes();
        match &self.transform {
            Transform::CmHmac { cipher, auth } => {
                if encrypt {
                    cipher.apply_keystream(iv, &mut buf[RTCP_HEADER_LEN..len]);
                }
                let auth_len = len + SRTCP_INDEX_LEN;
                buf[len..auth_len].copy_from_slice(&word);
                let mac = auth.sign(&buf[..auth_len], &[]);
                let tag_len = end - auth_len;
                buf[auth_len..end].copy_from_slice(&mac[..tag_len]);
            }
            Transform::Gcm(aead) => {
                // RFC 7714 §9.2: header and E‖index are the associated data, the rest the
                // plaintext; §9.3: with E = 0 the whole packet is associated data.
                let tag = if encrypt {
                    let (header, rest) = buf.split_at_mut(RTCP_HEADER_LEN);
                    aead.seal(iv, &[header, &word], &mut rest[..len - RTCP_HEADER_LEN])
                } else {
                    aead.seal(iv, &[&buf[..len], &word], &mut [])
                };
                buf[len..len + GCM_TAG_LEN].copy_from_slice(&tag);
                buf[len + GCM_TAG_LEN..end].copy_from_slice(&word);
            }
        }
    }

    /// True when the SRTCP packet `pkt` laid out as `at` authenticates.
    pub(super) fn verify_rtcp(&self, pkt: &[u8], at: &SrtcpLayout, ssrc: u32, word: u32) -> bool {
        let tag = &pkt[at.tag_at..at.tag_at + (pkt.len() - SRTCP_INDEX_LEN - at.rtcp_len)];
        match &self.transform {
            Transform::CmHmac { auth, .. } => {
                let mac = auth.sign(&pkt[..at.tag_at], &[]);
                mac[..tag.len()].ct_eq(tag).into()
            }
            Transform::Gcm(aead) => {
                let iv = self.iv(ssrc, u64::from(word & MAX_SRTCP_INDEX));
                let w = word.to_be_bytes();
                if word & SRTCP_E_FLAG != 0 {
                    let ct = &pkt[RTCP_HEADER_LEN..at.rtcp_len];
                    aead.verify(iv, &[&pkt[..RTCP_HEADER_LEN], &w], ct, tag)
                } else {
                    aead.verify(iv, &[&pkt[..at.rtcp_len], &w], &[], tag)
                }
            }
        }
    }

    /// Decrypts the SRTCP payload `pkt[8..rtcp_len]` (after its tag verified, E set).
    pub(super) fn decrypt_rtcp(&self, pkt: &mut [u8], rtcp_len: usize, ssrc: u32, index: u32) {
        let iv = self.iv(ssrc, u64::from(index));
        let payload = &mut pkt[RTCP_HEADER_LEN..rtcp_len];
        match &self.transform {
            Transform::CmHmac { cipher, .. } => cipher.apply_keystream(iv, payload),
            Transform::Gcm(aead) => aead.decrypt(iv, payload),
        }
    }
}

impl Drop for SessionKeys {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

/// The ROC as the 4 bytes RFC 3711 §4.2 appends to the authenticated portion.
fn roc_bytes(index: u64) -> [u8; 4] {
    ((index >> 16) as u32).to_be_bytes()
}
