#!/usr/bin/python3
"""SRTP oracle for the cross-check tests: libsrtp (through Debian's pylibsrtp) and a small
reference implementation of RFC 3711 written from the RFC (it needs python3-cryptography) for the
session parameters libsrtp's Python binding does not expose (UNENCRYPTED_SRTCP and friends).

Reads one command per line on stdin and answers one line per packet command on stdout:

  session <id> libsrtp <80|32> <tx|rx> <key‖salt hex> <replay window>
  session <id> ref <80|32> <key‖salt hex> <encrypt_rtp 0|1> <auth_rtp 0|1> <encrypt_rtcp 0|1>
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


def aes_cm(key, iv, n):
    """RFC 3711 4.1.1: keystream block j = AES(key, IV + j)."""
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    start = int.from_bytes(iv, "big")
    blocks = b"".join(((start + j) % (1 << 128)).to_bytes(16, "big") for j in range((n + 15) // 16))
    return ecb.update(blocks)[:n]


def kdf(master_key, master_salt, label, n):
    """RFC 3711 4.3.1 with a key derivation rate of 0."""
    x = int.from_bytes(master_salt, "big") ^ (label << 48)
    return aes_cm(master_key, (x << 16).to_bytes(16, "big"), n)


def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))


class Reference:
    """Sender side of RFC 3711, tracking ROC like Appendix A and SRTCP indices from 1."""

    def __init__(self, key_salt, tag_len, encrypt_rtp, auth_rtp, encrypt_rtcp):
        mk, ms = key_salt[:16], key_salt[16:30]
        self.rtp_keys = [kdf(mk, ms, 0, 16), kdf(mk, ms, 1, 20), kdf(mk, ms, 2, 14)]
        self.rtcp_keys = [kdf(mk, ms, 3, 16), kdf(mk, ms, 4, 20), kdf(mk, ms, 5, 14)]
        self.tag_len, self.encrypt_rtp, self.auth_rtp, self.encrypt_rtcp = tag_len, encrypt_rtp, auth_rtp, encrypt_rtcp
        self.roc, self.s_l, self.rtcp_index = {}, {}, {}

    @staticmethod
    def iv(salt, ssrc, index):
        return ((int.from_bytes(salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)).to_bytes(16, "big")

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
        body = pkt
        if self.encrypt_rtcp:
            body = pkt[:8] + xor(pkt[8:], aes_cm(ke, self.iv(ks, ssrc, idx), len(pkt) - 8))
        trailer = struct.pack("!I", (0x80000000 if self.encrypt_rtcp else 0) | idx)
        return body + trailer + hmac.new(ka, body + trailer, hashlib.sha1).digest()[:10]


def main():
    P = pylibsrtp.Policy
    profiles = {"80": P.SRTP_PROFILE_AES128_CM_SHA1_80, "32": P.SRTP_PROFILE_AES128_CM_SHA1_32}
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
                ref = Reference(bytes.fromhex(f[4]), 10 if f[3] == "80" else 4,
                                f[5] == "1", f[6] == "1", f[7] == "1")
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
