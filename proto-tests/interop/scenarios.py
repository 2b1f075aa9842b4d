"""The interop scenarios. Each gets its own relay, its own ports (`ctx.base` .. +199) and work
directory, and returns a short note for its PASS line or raises Fail."""
import base64
import os
import time

from harness import (Fail, Kamailio, MetricsPoller, Relay, Sdp, check, counter, expect_tone,
                     sip_summary, wait_until, write_tone)
from peers import Baresip, Linphone, gst_peer, sipp, sleep_until, write  # noqa: F401


class Ctx:
    def __init__(self, relay_bin, workdir, procs, base):
        self.relay_bin, self.workdir, self.procs, self.base = relay_bin, workdir, procs, base
        self.relay = self.kamailio = None

    def start_relay(self, **kw):
        self.relay = Relay(self.procs, self.relay_bin, self.base, **kw)
        return self.relay

    def start_kamailio(self):
        self.kamailio = Kamailio(self.procs, self.base + 10, self.base)
        return self.kamailio

    def tone(self, freq, seconds=30):
        path = os.path.join(self.workdir, f"tone{freq}.wav")
        if not os.path.exists(path):
            write_tone(path, freq, seconds)
        return path

    def diagnostics(self):
        """What a failure prints besides its message: the SIP messages the proxy saw and the
        relay's log lines for the calls."""
        out = []
        if self.kamailio:
            try:
                msgs = self.kamailio.messages()
                if msgs:
                    out.append("SIP through Kamailio (direction, peer, first line, SDP security):")
                    out += sip_summary(msgs).splitlines()
            except OSError:
                pass
        if self.relay:
            ids = self.relay.call_ids()
            out.append(f"relay log for call(s) {', '.join(ids) or '(none)'}:")
            out += ["  " + line for line in self.relay.log_for(ids)]
        out.append(f"work directory: {self.workdir}")
        return out


class Scenario:
    def __init__(self, name, run, timeout):
        self.name, self.run, self.timeout = name, run, timeout


def one_call(msgs, call_id=None):
    """The messages of one call (the first one seen, or `call_id`)."""
    if not msgs:
        return []
    cid = call_id or msgs[0][2].call_id
    return [m for m in msgs if m[2].call_id == cid]


def find(msgs, direction, dst=None, method=None, status=None, with_sdp=True, nth=0):
    """The nth message the proxy received ('in', from dst) or sent ('out', to dst)."""
    hits = [m for d, peer, m in msgs
            if d == direction and (dst is None or peer == dst)
            and (method is None or m.method == method)
            and (status is None or m.status == status)
            and (m.is_request if status is None else True)
            and (not with_sdp or m.sdp())]
    if status is None:
        hits = [m for m in hits if m.is_request]
    return hits[nth] if len(hits) > nth else None


def must(msg, what):
    if msg is None:
        raise Fail(f"{what}; it never came")
    return msg


# ---------------------------------------------------------------------------------------------
# 1 and 2. Two baresip UAs call each other through Kamailio and the relay


def baresip_call(ctx, alice_enc, bob_enc, policy):
    """alice (440 Hz) calls bob (660 Hz) through Kamailio with bob's leg under `policy`; a call
    of about 5 s. Returns the relay, the SIP messages of the call, and both UAs."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio()
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    alice = Baresip(ctx.workdir, "alice", b + 20, b + 40, ctx.tone(440), alice_enc)
    bob = Baresip(ctx.workdir, "bob", b + 22, b + 60, ctx.tone(660), bob_enc)
    bob.start(ctx.procs, 9)
    bob.wait_bound()
    alice.start(ctx.procs, 6, dial=f"sip:{policy}-{b + 22}-bob@127.0.0.1:{kam.port}")
    ctx.procs.wait(alice.proc, 15)
    ctx.procs.wait(bob.proc, 10)
    msgs = one_call(kam.messages())
    sdps = {
        "alice's offer": must(find(msgs, "in", method="INVITE"), "an INVITE with SDP from alice at Kamailio"),
        "offer to bob": must(find(msgs, "out", dst=f"127.0.0.1:{b + 22}", method="INVITE"),
                             "Kamailio to forward the INVITE to bob"),
        "bob's answer": must(find(msgs, "in", status=200, method="INVITE"), "bob's 200 OK with SDP"),
        "answer to alice": must(find(msgs, "out", dst=f"127.0.0.1:{b + 20}", status=200, method="INVITE"),
                                "Kamailio to forward bob's 200 OK to alice"),
    }
    return relay, {k: v.sdp() for k, v in sdps.items()}, alice, bob


def expect_leg(sdp, who, proto, crypto, ctx):
    """An SDP the relay wrote: media on a relay port, `proto`, and a=crypto or not."""
    m = sdp.media[0]
    lo = ctx.base + 100
    check(m["proto"] == proto and bool(sdp.crypto(0)) == crypto and lo <= m["port"] < lo + 100
          and "c=IN IP4 127.0.0.1" in sdp.text
          and not any(sdp.attrs(0, a) for a in ("tcap", "acap", "pcfg")),
          f"{who}: {proto} {'with' if crypto else 'without'} a=crypto (no cap-neg) on a relay port "
          f"({lo}-{lo + 99})", sdp.summary())


def expect_relay_clean(ctx, relay):
    """The ng commands from Kamailio all succeeded, and after the BYE the call and its ports are
    gone."""
    log = open(relay.proc.logpath).read()
    for cmd in ("offer", "answer", "delete"):
        check(f'command="{cmd}"' in log, f"the relay to log an ng {cmd} from Kamailio", "none")
    errors = [line for line in log.splitlines() if 'result="error"' in line]
    check(not errors, "no ng command to fail", errors[:3])
    wait_until("the relay to list no call after the BYE",
               lambda: relay.cmd({"command": "list"}).get("calls") == [], 5)
    wait_until("every port pair to be back in the pool",
               lambda: relay.cmd({"command": "statistics"})["free-port-pairs"] == ctx.free0, 5)


def drops(m):
    return {k.split('reason="')[1].rstrip('"}'): int(v) for k, v in m.items()
            if k.startswith("srtp_relay_drops_total") and v}


def kamailio_baresip(ctx):
    """SRTP on both legs (bob under enforce): decrypt and re-encrypt with the relay's keys."""
    relay, sdp, alice, bob = baresip_call(ctx, "srtp-mand", "srtp-mand", "enforce")
    expect_leg(sdp["offer to bob"], "INVITE to bob", "RTP/SAVP", True, ctx)
    expect_leg(sdp["answer to alice"], "200 OK to alice", "RTP/SAVP", True, ctx)
    check(len(sdp["answer to alice"].crypto(0)) == 1, "exactly one crypto line in the answer to alice",
          sdp["answer to alice"].summary())
    check(not (sdp["offer to bob"].keys() & sdp["alice's offer"].keys())
          and not (sdp["answer to alice"].keys() & sdp["bob's answer"].keys()),
          "each leg to see only relay keys, never the other endpoint's", "a key crossed the relay")
    expect_tone(bob.decoded_wav(), 440, 3.0, "bob")
    expect_tone(alice.decoded_wav(), 660, 3.0, "alice")
    expect_relay_clean(ctx, relay)
    m = relay.metrics()
    fwd = counter(m, "srtp_relay_packets_total", direction="out", transform="decrypt+encrypt")
    check(fwd >= 300, "at least 300 SRTP packets re-encrypted by the relay", fwd)
    # baresip sends a plain RTCP BYE on its SRTP leg when it hangs up (protocol.md R2): one
    # auth_failed drop per side at most; any more would be real packets refused.
    d = drops(m)
    check(d.get("auth_failed", 0) <= 2 and d.get("replayed", 0) == 0,
          "at most the 2 plain RTCP BYEs at hang-up refused, no replay", d)
    return f"{int(fwd)} packets decrypt+encrypt, tone heard both ways, drops {d}"


def baresip_srtp_plain(ctx):
    """alice insists on SRTP (srtp-mand), bob speaks plain RTP (his leg under disabled): the
    relay decrypts towards bob and encrypts towards alice."""
    relay, sdp, alice, bob = baresip_call(ctx, "srtp-mand", None, "disabled")
    expect_leg(sdp["offer to bob"], "INVITE to bob", "RTP/AVP", False, ctx)
    expect_leg(sdp["answer to alice"], "200 OK to alice", "RTP/SAVP", True, ctx)
    check(sdp["bob's answer"].media[0]["proto"] == "RTP/AVP" and not sdp["bob's answer"].crypto(0),
          "bob to answer plain RTP/AVP", sdp["bob's answer"].summary())
    expect_tone(bob.decoded_wav(), 440, 3.0, "bob (plain)")
    expect_tone(alice.decoded_wav(), 660, 3.0, "alice (SRTP)")
    expect_relay_clean(ctx, relay)
    m = relay.metrics()
    dec = counter(m, "srtp_relay_packets_total", direction="out", transform="decrypt")
    enc = counter(m, "srtp_relay_packets_total", direction="out", transform="encrypt")
    check(dec >= 150 and enc >= 150,
          "at least 150 packets decrypted (alice to bob) and 150 encrypted (bob to alice)",
          f"decrypt {dec}, encrypt {enc}")
    d = drops(m)
    check(d.get("auth_failed", 0) <= 1 and d.get("replayed", 0) == 0,
          "at most alice's plain RTCP BYE refused, no replay", d)
    return f"{int(dec)} decrypted, {int(enc)} encrypted, tone heard both ways"


# ---------------------------------------------------------------------------------------------
# 5. GStreamer srtpenc/srtpdec with known keys, both suites, driven over ng directly


def plain_sdp(port, proto, crypto=(), extra=()):
    lines = ["v=0", "o=gst 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} {proto} 0", "a=rtpmap:0 PCMU/8000"]
    lines += [f"a=crypto:{t} {s} inline:{base64.b64encode(k).decode()}" for t, s, k in crypto]
    lines += list(extra) + ["a=sendrecv", ""]
    return "\r\n".join(lines)


SUITE = {"80": "AES_CM_128_HMAC_SHA1_80", "32": "AES_CM_128_HMAC_SHA1_32"}


def gstreamer_srtp(ctx):
    """Two calls, each with an SRTP GStreamer endpoint on both legs and the suites crossed:
    A _80 / B _32, then A _32 / B _80. Each endpoint encrypts with its own known key (the one in
    its SDP) and decrypts with the key the relay gave it; the tone must arrive both ways."""
    relay = ctx.start_relay()
    b = ctx.base
    peers, expect = [], []
    for n, (sa, sb, fa, fb) in enumerate((("80", "32", 440, 660), ("32", "80", 520, 780))):
        call = f"gst-{sa}-{sb}"
        ka, kb = os.urandom(30), os.urandom(30)
        pa, pb = b + 20 + 4 * n, b + 22 + 4 * n
        ssrc_a, ssrc_b = 0x11110000 + n, 0x22220000 + n
        r = relay.cmd({"command": "offer", "call-id": call, "from-tag": "a", "sdp":
                       plain_sdp(pa, "RTP/SAVP", [(1, SUITE[sa], ka)]),
                       "to-media-security": "enforce"})
        check(r.get("result") == "ok", f"{call}: the offer accepted", r)
        offer_b = Sdp(r["sdp"])
        pick = [c for c in offer_b.crypto(0) if c[1] == SUITE[sb]]
        check(offer_b.media[0]["proto"] == "RTP/SAVP" and pick,
              f"{call}: an RTP/SAVP offer to B with a {SUITE[sb]} line", offer_b.summary())
        tag_b, _, relay_key_b = pick[0]
        r = relay.cmd({"command": "answer", "call-id": call, "from-tag": "a", "to-tag": "b", "sdp":
                       plain_sdp(pb, "RTP/SAVP", [(tag_b, SUITE[sb], kb)])})
        check(r.get("result") == "ok", f"{call}: the answer accepted", r)
        ans_a = Sdp(r["sdp"])
        check(ans_a.media[0]["proto"] == "RTP/SAVP" and len(ans_a.crypto(0)) == 1
              and ans_a.crypto(0)[0][:2] == ("1", SUITE[sa]),
              f"{call}: an answer to A with one a=crypto:1 {SUITE[sa]}", ans_a.summary())
        relay_key_a = base64.b64decode(ans_a.crypto(0)[0][2])
        relay_key_b = base64.b64decode(relay_key_b)
        wav_a, wav_b = (os.path.join(ctx.workdir, f"{call}-{x}.wav") for x in "ab")
        peers.append(gst_peer(ctx.procs, f"gst-{call}-a", pa, offer_b_port(ans_a), (sa, ka, ssrc_a),
                              (sa, relay_key_a, ssrc_b), fa, 4, wav_a))
        peers.append(gst_peer(ctx.procs, f"gst-{call}-b", pb, offer_b_port(offer_b), (sb, kb, ssrc_b),
                              (sb, relay_key_b, ssrc_a), fb, 4, wav_b))
        expect += [(wav_a, fb, f"{call} A (srtpdec {sa})"), (wav_b, fa, f"{call} B (srtpdec {sb})")]
    for p in peers:
        rc = ctx.procs.wait(p, 15)
        check(rc == 0, f"{p.name} to exit 0", f"{rc}: {open(p.logpath).read()[-500:]}")
    heard = [expect_tone(path, freq, 3.0, who)[0] for path, freq, who in expect]
    m = relay.metrics()
    fwd = counter(m, "srtp_relay_packets_total", direction="out", transform="decrypt+encrypt")
    d = drops(m)
    check(fwd >= 4 * 180, "at least 720 packets decrypted and re-encrypted (4 streams of 200)", fwd)
    check(not d.get("auth_failed") and not d.get("replayed"), "no authentication failure or replay", d)
    return f"suites crossed both ways, {int(fwd)} packets, tone {min(heard):.1f}-{max(heard):.1f} s per stream"


def offer_b_port(sdp):
    return sdp.media[0]["port"]


ALL = [
    Scenario("kamailio-baresip-srtp", kamailio_baresip, 40),
    Scenario("baresip-srtp-to-plain", baresip_srtp_plain, 40),
    Scenario("gstreamer-srtp-both-suites", gstreamer_srtp, 40),
]
