"""Media for the SIPp scenarios: SIPp only signals, and an `Endpoint` stands in for the media of
each side on the port its SDP names. It sends a numbered packet every 20 ms to the relay port
the other side's SDP gave it (RTP, SRTP with its own SDES key, or UDPTL datagrams) and records
what comes back, so that a scenario checks the packets on both ends of the relay.

Every packet carries its sender's name and number in a payload both ends can recompute, so the
receiver knows exactly what must have arrived: a packet that decrypts but differs, or comes from
another port than the relay's, is an error.
"""
import base64
import socket
import struct
import threading
import time

import pylibsrtp

PROFILES = {"AES_CM_128_HMAC_SHA1_80": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
            "AES_CM_128_HMAC_SHA1_32": pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32}


def srtp_session(crypto, outbound):
    """A libsrtp session for `crypto` = (suite, key||salt base64) of an SDP's a=crypto line."""
    suite, key = crypto
    policy = pylibsrtp.Policy(
        key=base64.b64decode(key), srtp_profile=PROFILES[suite],
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND if outbound
        else pylibsrtp.Policy.SSRC_ANY_INBOUND)
    return pylibsrtp.Session(policy)


def payload(name, n, size):
    """What `name` sends in its packet number `n`: name, number, then a counting filler."""
    head = name.encode().ljust(8, b"\0") + struct.pack("!I", n)
    return head + bytes((n + i) % 256 for i in range(size - len(head)))


def udptl(name, n):
    """A UDPTL datagram (T.38 §9.1: sequence number, primary IFP, no redundancy) whose IFP
    carries `name` and `n` (opaque to the relay, checked byte for byte at the far end)."""
    ifp = payload(name, n, 40)
    return struct.pack("!HB", n & 0xFFFF, len(ifp)) + ifp + b"\x00"


class Endpoint:
    """One media port on 127.0.0.1. `kind`: "rtp" (PCMU-sized RTP, SRTP when `tx`, the crypto
    of its own SDP, is given) or "udptl". `rx` is the crypto the relay gave it (None: plain).
    RTP goes out under `ssrc` (default 0x5EED0000 + port) with sequence numbers from `seq`;
    packet number n has the timestamp 160 * n."""

    def __init__(self, name, port, kind="rtp", tx=None, rx=None, ssrc=None, seq=1):
        assert len(name.encode()) <= 8, "a name fits the payload's 8 bytes"
        self.name, self.port, self.kind = name, port, kind
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.tx = srtp_session(tx, True) if tx else None
        self.rx = srtp_session(rx, False) if rx else None
        self.ssrc = 0x5EED0000 + port if ssrc is None else ssrc
        self.seq0 = seq - 1
        self.dest, self.n, self.stop_flag = None, 0, False
        self.got = []  # (time, source port, sender's name or None, packet number or None)
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def send_to(self, port):
        """Starts (or moves) the stream to the relay's `port` on 127.0.0.1."""
        with self.lock:
            self.dest = ("127.0.0.1", port)

    def packet(self):
        self.n += 1
        if self.kind == "udptl":
            return udptl(self.name, self.n)
        rtp = struct.pack("!BBHII", 0x80, 0, (self.seq0 + self.n) & 0xFFFF,
                          (160 * self.n) & 0xFFFFFFFF, self.ssrc)
        rtp += payload(self.name, self.n, 160)
        return self.tx.protect(rtp) if self.tx else rtp

    def received(self, data, src):
        """(sender's name, number) when `data` is a packet some Endpoint sent, else None."""
        try:
            if self.kind == "udptl":
                n, size = struct.unpack("!HB", data[:3])
                body = data[3:3 + size]
            else:
                if self.rx:
                    data = self.rx.unprotect(data)
                body = data[12:]
            name = body[:8].rstrip(b"\0").decode()
            n = struct.unpack("!I", body[8:12])[0]
        except Exception:  # libsrtp's errors and short packets alike
            return None
        if self.kind == "udptl" and data != udptl(name, n):
            return None
        if self.kind == "rtp" and body != payload(name, n, 160):
            return None
        return name, n

    def run(self):
        next_t = time.monotonic()
        while not self.stop_flag:
            now = time.monotonic()
            with self.lock:
                dest = self.dest
            if dest and now >= next_t:
                try:
                    self.sock.sendto(self.packet(), dest)
                except OSError:  # an ICMP error from an earlier send
                    pass
                next_t = max(next_t + 0.02, now)
            self.sock.settimeout(max(0.001, next_t - now) if dest else 0.02)
            try:
                data, src = self.sock.recvfrom(4096)
            except OSError:  # timeout, or an ICMP error from an earlier send
                continue
            got = self.received(data, src)
            with self.lock:
                self.got.append((time.monotonic(), src[1], *(got or (None, None))))

    def heard(self, peer, since=0.0, until=None):
        """Packets of `peer` (its name) that arrived intact in [since, until]."""
        with self.lock:
            return sum(1 for t, _, name, _ in self.got
                       if name == peer and since <= t and (until is None or t <= until))

    def errors(self, since=0.0):
        """Packets since `since` that were not an intact packet of some Endpoint."""
        with self.lock:
            return sum(1 for t, _, name, _ in self.got if name is None and t >= since)

    def sources(self, since=0.0):
        with self.lock:
            return {src for t, src, _, _ in self.got if t >= since}

    def stop(self):
        self.stop_flag = True
        self.thread.join(timeout=2)
        self.sock.close()


class Phone(Endpoint):
    """An SRTP phone's media: an Endpoint whose ONE libsrtp receive context (made from the
    relay's a=crypto, as a phone makes it) must take every packet the relay sends, whatever the
    source behind the relay does. It keeps every packet: `rtp` has (time, sequence number,
    timestamp, SSRC, marker, payload) of each that authenticated and decrypted, `failures`
    libsrtp's error for each that did not (an authentication failure, a replay)."""

    def __init__(self, name, port, tx, rx):
        self.rtp, self.failures = [], []
        super().__init__(name, port, tx=tx, rx=rx)

    def received(self, data, src):
        """An Endpoint's (name, number); ("", None) for other RTP that decrypted (a capture
        SIPp plays); None when libsrtp refused it."""
        try:
            rtp = self.rx.unprotect(data)
            b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", rtp[:12])
        except (pylibsrtp.Error, struct.error) as e:
            with self.lock:
                self.failures.append(str(e))
            return None
        body = rtp[12 + 4 * (b0 & 0x0F):]
        with self.lock:
            self.rtp.append((time.monotonic(), seq, ts, ssrc, b1 >> 7, body))
        try:
            name, n = body[:8].rstrip(b"\0").decode(), struct.unpack("!I", body[8:12])[0]
        except (UnicodeDecodeError, struct.error):
            return "", None
        return (name, n) if name and body == payload(name, n, 160) else ("", None)
