#!/usr/bin/python3
"""SRTP oracle for the cross-check tests: libsrtp (through Debian's pylibsrtp) and a small
reference implementation of RFC 3711, RFC 6188 and RFC 7714 written from the RFCs (it needs
python3-cryptography) for the session parameters libsrtp's Python binding does not expose
(UNENCRYPTED_SRTCP and friends) and for AES-256 counter mode, which it has no profile for.

Reads one command per line on stdin and answers one line per packet command on stdout:

  session <id> libsrtp <80|32|gcm128|gcm256> <tx|rx> <key‖salt hex> <replay window>
  session <id> ref <80|32|gcm> <key‖salt hex> <encrypt_rtp 0|1> <auth_rtp 0|1> <encrypt_rtcp 0|1>
      (the key length picks AES-128 or AES-256; gcm ignores encrypt_rtp and auth_rtp)
  rtp <id> <hex>      protect (tx) or unprotect (rx); ref sessions protect only
  rtcp <id> <hex>
  -> "ok <hex>" | "err <message>"

Run with /usr/bin/python3: Debian's python3-* modules are not seen by a pyenv python3.
"""
import hashlib
import hmac
import struct
import sys

import pylibsrtp
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def aes_cm(key, iv, n):
    """RFC 3711 4.1.1: keystream block j = AES(key, IV + j)."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    start = int.from_bytes(iv, "big")
    blocks = b"".join(((start + j) % (1 << 128)).to_bytes(16, "big") for j in range((n + 15) // 16))
    return ecb.update(blocks)[:n]


def kdf(master_key, master_salt, label, n):
    """RFC 3711 4.3.1 with a key derivation rate of 0; a 12-byte GCM salt is padded with two
    zero bytes on the right (RFC 7714 11)."""
    x = int.from_bytes(master_salt.ljust(14, b"\0"), "big") ^ (label << 48)
    return aes_cm(master_key, (x << 16).to_bytes(16, "big"), n)


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


class Reference:
    """Sender side of RFC 3711, tracking ROC like Appendix A and SRTCP indices from 1."""

    def __init__(self, key_salt, tag_len, encrypt_rtp, auth_rtp, encrypt_rtcp, gcm=False):
        salt_len = 12 if gcm else 14
        key_len = len(key_salt) - salt_len
        mk, ms = key_salt[:key_len], key_salt[key_len:]
        self.gcm = gcm
        self.rtp_keys = [kdf(mk, ms, 0, key_len), kdf(mk, ms, 1, 20), kdf(mk, ms, 2, salt_len)]
        self.rtcp_keys = [kdf(mk, ms, 3, key_len), kdf(mk, ms, 4, 20), kdf(mk, ms, 5, salt_len)]
        self.tag_len, self.encrypt_rtp, self.auth_rtp, self.encrypt_rtcp = tag_len, encrypt_rtp, auth_rtp, encrypt_rtcp
        self.roc, self.s_l, self.rtcp_index = {}, {}, {}

    @staticmethod
    def iv(salt, ssrc, index):
        return ((int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)).to_bytes(16, "big")

    @staticmethod
    def gcm_iv(salt, ssrc, index):
        """RFC 7714 8.1 and 9.1: 0x0000 || SSRC || ROC || SEQ (or 0x0000 || index) XOR salt."""
        return (int.from_bytes(salt, "big") ^ (ssrc << 48) ^ index).to_bytes(12, "big")

    def index(self, ssrc, seq):
        if ssrc not in self.s_l:
            self.roc[ssrc], self.s_l[ssrc] = 0, seq
        roc, s_l = self.roc[ssrc], self.s_l[ssrc]
        if s_l < 32768:
            v = roc - 1 if seq - s_l > 32768 else roc
        else:
            v = roc + 1 if s_l - 32768 > seq else roc
        if v == roc:
            self.s_l[ssrc] = max(s_l, seq)
        elif v == roc + 1:
            self.roc[ssrc], self.s_l[ssrc] = v, seq
        return (v << 16) | seq

    def protect_rtp(self, pkt):
        hl = 12 + 4 * (pkt[0] & 0x0F)
        if pkt[0] & 0x10:
            hl += 4 + 4 * struct.unpack("!H", pkt[hl + 2:hl + 4])[0]
        seq, ssrc = struct.unpack("!H", pkt[2:4])[0], struct.unpack("!I", pkt[8:12])[0]
        index = self.index(ssrc, seq)
        ke, ka, ks = self.rtp_keys
        if self.gcm:
            # RFC 7714 8.2: the header is the associated data; ciphertext and tag follow it.
            return pkt[:hl] + AESGCM(ke).encrypt(self.gcm_iv(ks, ssrc, index), pkt[hl:], pkt[:hl])
        body = pkt[hl:]
        if self.encrypt_rtp:
            body = xor(body, aes_cm(ke, self.iv(ks, ssrc, index), len(body)))
        out = pkt[:hl] + body
        if self.auth_rtp:
            out += hmac.new(ka, out + struct.pack("!I", index >> 16), hashlib.sha1).digest()[:self.tag_len]
        return out

    def protect_rtcp(self, pkt):
        ssrc = struct.unpack("!I", pkt[4:8])[0]
        idx = self.rtcp_index.get(ssrc, 0) + 1
        self.rtcp_index[ssrc] = idx
        ke, ka, ks = self.rtcp_keys
        if self.gcm:
            # RFC 7714 9.2/9.3: header and E||index (or with E=0 the whole packet) are the
            # associated data; the tag comes before E||index.
            word = struct.pack("!I", (0x80000000 if self.encrypt_rtcp else 0) | idx)
            iv = self.gcm_iv(ks, ssrc, idx)
            if self.encrypt_rtcp:
                sealed = AESGCM(ke).encrypt(iv, pkt[8:], pkt[:8] + word)
                return pkt[:8] + sealed + word
            return pkt + AESGCM(ke).encrypt(iv, b"", pkt + word) + word
        body = pkt
        if self.encrypt_rtcp:
            body = pkt[:8] + xor(pkt[8:], aes_cm(ke, self.iv(ks, ssrc, idx), len(pkt) - 8))
        trailer = struct.pack("!I", (0x80000000 if self.encrypt_rtcp else 0) | idx)
        return body + trailer + hmac.new(ka, body + trailer, hashlib.sha1).digest()[:10]


def main():
    P = pylibsrtp.Policy
    profiles = {"80": P.SRTP_PROFILE_AES128_CM_SHA1_80, "32": P.SRTP_PROFILE_AES128_CM_SHA1_32,
                "gcm128": P.SRTP_PROFILE_AEAD_AES_128_GCM, "gcm256": P.SRTP_PROFILE_AEAD_AES_256_GCM}
    sessions = {}
    out = sys.stdout
    for line in sys.stdin:
        f = line.split()
        if not f:
            continue
        if f[0] == "session":
            sid, kind = f[1], f[2]
            if kind == "libsrtp":
                tx = f[4] == "tx"
                policy = P(key=bytes.fromhex(f[5]),
                           ssrc_type=P.SSRC_ANY_OUTBOUND if tx else P.SSRC_ANY_INBOUND,
                           srtp_profile=profiles[f[3]])
                policy.window_size = int(f[6])
                s = pylibsrtp.Session(policy)
                sessions[sid] = (s.protect, s.protect_rtcp) if tx else (s.unprotect, s.unprotect_rtcp)
            else:
                ref = Reference(bytes.fromhex(f[4]), {"80": 10, "32": 4, "gcm": 16}[f[3]],
                                f[5] == "1", f[6] == "1", f[7] == "1", gcm=f[3] == "gcm")
                sessions[sid] = (ref.protect_rtp, ref.protect_rtcp)
            continue
        rtp, rtcp = sessions[f[1]]
        fn = rtp if f[0] == "rtp" else rtcp
        try:
            out.write("ok " + fn(bytes.fromhex(f[2])).hex() + "\n")
        except pylibsrtp.Error as e:
            out.write("err " + str(e).replace("\n", " ") + "\n")
    out.flush()


if __name__ == "__main__":
    main()
