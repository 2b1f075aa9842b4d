"""The interop scenarios. Each gets its own relay, its own ports (`ctx.base` .. +199) and work
directory, and returns a short note for its PASS line or raises Fail."""
import os
import time

from harness import (Fail, Kamailio, MetricsPoller, Relay, check, counter, expect_tone,
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


ALL = [
    Scenario("kamailio-baresip-srtp", kamailio_baresip, 40),
    Scenario("baresip-srtp-to-plain", baresip_srtp_plain, 40),
]
