"""The interop scenarios. Each gets its own relay, its own ports (`ctx.base` .. +199) and work
directory, and returns a short note for its PASS line or raises Fail."""
import base64
import os
import re
import signal
import struct
import time

from harness import (Fail, Kamailio, MetricsPoller, Relay, Sdp, check, counter, expect_tone,
                     sip_summary, wait_until, write_tone)
from media import Endpoint, Phone
from peers import Baresip, Linphone, gst_peer, gst_rtcp_peer, port_bound, sipp, write


class Ctx:
    def __init__(self, relay_bin, workdir, procs, base):
        self.relay_bin, self.workdir, self.procs, self.base = relay_bin, workdir, procs, base
        self.relay = self.kamailio = None
        self.relays = []

    def start_relay(self, base=None, **kw):
        """A relay with ng on `base` (default the scenario's base), metrics on base+1."""
        relay = Relay(self.procs, self.relay_bin, self.base if base is None else base, **kw)
        self.relays.append(relay)
        self.relay = self.relay or relay
        return relay

    def start_kamailio(self, cfg="kamailio.cfg", ng_ports=None, local=None):
        """Kamailio on base+10 (UDP; with cfg "deploy", deploy/kamailio/kamailio.cfg, TLS on
        base+11), its rtpengine set the relay(s) on `ng_ports` (default the scenario's relay)."""
        self.kamailio = Kamailio(self.procs, self.base + 10, ng_ports or [self.base], cfg, local)
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
        for relay in self.relays:
            alive = relay.proc.poll() is None
            st = relay.try_cmd({"command": "statistics"}) if alive else None
            if st:
                nonzero = {k: v for k, v in st.get("drops", {}).items() if v}
                out.append(f"{relay.name} now: {st.get('calls')} call(s), packets "
                           f"{st.get('packets')}, drops {nonzero}")
            elif not alive:
                out.append(f"{relay.name}: exited with {relay.proc.returncode}")
            ids = relay.call_ids()
            out.append(f"{relay.name} log for call(s) {', '.join(ids) or '(none)'}:")
            out += ["  " + line for line in relay.log_for(ids)]
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


def expect_relay_clean(ctx, relay, ended_before_bye=False):
    """The ng commands from Kamailio all succeeded, and after the BYE the call and its ports are
    gone. `ended_before_bye`: the relay ended the call itself (a timeout), so the `$rtpstat`
    query Kamailio sends at the BYE rightly finds no call."""
    log = open(relay.proc.logpath).read()
    for cmd in ("offer", "answer", "delete"):
        check(f'command="{cmd}"' in log, f"the relay to log an ng {cmd} from Kamailio", "none")
    errors = [line for line in log.splitlines() if 'result="error"' in line
              and not (ended_before_bye and 'command="query"' in line
                       and 'reason="unknown call-id"' in line)]
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
    # baresip sends a plain RTCP BYE on its SRTP leg when it hangs up (a known baresip behaviour): one
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
# 3 and 4. Linphone: RFC 5939 capability negotiation, and a new key in every re-INVITE


def linphone_call(lp, uri, tone, rec, seconds):
    """Calls `uri`, plays `tone` and records what comes back into `rec` for `seconds`, hangs
    up. Returns the time the call was connected."""
    off = len(lp.output())
    lp.send(f"call {uri}")
    lp.wait_output("connected", 8, off)
    lp.send(f"play {tone}")
    lp.send(f"record {rec}")
    time.sleep(seconds)
    off = len(lp.output())
    lp.send("terminate")
    lp.wait_output("ended", 5, off)


def capneg_leaks(sdp):
    """Cap-neg or DTLS/ZRTP attributes in an SDP the relay wrote (they must never cross)."""
    return [a for m in sdp.media for a in m["attrs"]
            if a.split(":")[0] in ("tcap", "acap", "pcfg", "acfg", "fingerprint", "setup", "zrtp-hash")]


def linphone_capneg(ctx):
    """Linphone offers SRTP with RFC 5939 capability negotiation (its actual configuration is
    RTP/SAVP with a=crypto, potential ones add DTLS, ZRTP and plain RTP/AVP). Through the relay
    to bob (baresip srtp-mand) under enforce, then to carol (baresip, plain) under disabled;
    then linphone answers the relay's own cap-neg offer (a call from dave, plain)."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio()
    b = ctx.base
    bob = Baresip(ctx.workdir, "bob", b + 22, b + 40, ctx.tone(660), "srtp-mand")
    carol = Baresip(ctx.workdir, "carol", b + 24, b + 60, ctx.tone(880), None)
    for ua in (bob, carol):
        ua.start(ctx.procs, 25)
    for ua in (bob, carol):
        ua.wait_bound()
    lp = Linphone(ctx.workdir, "linphone", b + 30, b + 80)
    lp.start(ctx.procs)
    notes = []
    for callee, policy, freq, proto, transforms in (
            (bob, "enforce", 660, "RTP/SAVP", ("decrypt+encrypt", "decrypt+encrypt")),
            (carol, "disabled", 880, "RTP/AVP", ("decrypt", "encrypt"))):
        before = relay.metrics()
        rec = os.path.join(ctx.workdir, f"linphone-{callee.name}.wav")
        linphone_call(lp, f"sip:{policy}-{callee.sip_port}-{callee.name}@127.0.0.1:{kam.port}",
                      ctx.tone(440), rec, 3)
        msgs = [m for m in kam.messages() if m[2].headers.get("to", "").find(f"{policy}-") >= 0]
        who = f"call to {callee.name} ({policy})"
        offer = must(find(msgs, "in", method="INVITE"), f"{who}: linphone's INVITE").sdp()
        check(offer.acap_crypto(0) and offer.attrs(0, "pcfg"),
              f"{who}: linphone's offer to use RFC 5939 cap-neg (acap crypto, pcfg)", offer.summary())
        to_callee = must(find(msgs, "out", dst=f"127.0.0.1:{callee.sip_port}", method="INVITE"),
                         f"{who}: the INVITE forwarded to {callee.name}").sdp()
        answer = must(find(msgs, "out", dst=f"127.0.0.1:{lp.sip_port}", status=200, method="INVITE"),
                      f"{who}: the 200 OK forwarded to linphone").sdp()
        expect_leg(to_callee, f"{who}: INVITE to {callee.name}", proto, proto == "RTP/SAVP", ctx)
        check(not capneg_leaks(to_callee) and not (to_callee.keys() & offer.keys()),
              f"{who}: none of linphone's keys or cap-neg/DTLS/ZRTP attributes in the offer to "
              f"{callee.name}", capneg_leaks(to_callee) or "one of linphone's keys")
        offered = {(t, s) for t, s, _ in offer.crypto(0) + offer.acap_crypto(0)}
        got = answer.crypto(0)
        check(answer.media[0]["proto"] == "RTP/SAVP" and len(got) == 1 and got[0][:2] in offered
              and not (answer.keys() & offer.keys()),
              f"{who}: linphone answered RTP/SAVP with one a=crypto echoing an offered tag and suite, "
              "with the relay's key", answer.summary())
        expect_tone(callee.decoded_wav(), 440, 1.5, f"{who}: {callee.name}")
        expect_tone(rec, freq, 1.5, f"{who}: linphone")
        after = relay.metrics()
        moved = [counter(after, "srtp_relay_packets_total", direction="out", transform=t)
                 - counter(before, "srtp_relay_packets_total", direction="out", transform=t)
                 for t in set(transforms)]
        check(min(moved) >= 100, f"{who}: packets forwarded as {'/'.join(sorted(set(transforms)))}",
              moved)
        notes.append(f"{policy}: {proto} {'/'.join(sorted(set(transforms)))}")
    # And the other way round: a plain caller (dave) to linphone under best-effort. The relay
    # offers linphone its own cap-neg (RTP/AVP with tcap/acap/pcfg) and linphone, as an RFC 5939
    # answerer, takes SRTP with a=acfg.
    dave = Baresip(ctx.workdir, "dave", b + 26, b + 70, ctx.tone(880), None)
    before = relay.metrics()
    lp.send("autoanswer enable")
    off = len(lp.output())
    dave.start(ctx.procs, 5, dial=f"sip:besteffort-{lp.sip_port}-linphone@127.0.0.1:{kam.port}")
    lp.wait_output("connected", 8, off)
    rec = os.path.join(ctx.workdir, "linphone-dave.wav")
    lp.send(f"play {ctx.tone(440)}")
    lp.send(f"record {rec}")
    ctx.procs.wait(dave.proc, 12)
    msgs = [m for m in kam.messages() if m[2].headers.get("from", "").find("dave") >= 0]
    who = "call from dave (plain) to linphone (best-effort)"
    to_lp = must(find(msgs, "out", dst=f"127.0.0.1:{lp.sip_port}", method="INVITE"),
                 f"{who}: the INVITE to linphone").sdp()
    lp_ans = must(find(msgs, "in", status=200, method="INVITE"), f"{who}: linphone's 200 OK").sdp()
    to_dave = must(find(msgs, "out", dst=f"127.0.0.1:{dave.sip_port}", status=200, method="INVITE"),
                   f"{who}: the 200 OK to dave").sdp()
    check(to_lp.media[0]["proto"] == "RTP/AVP" and to_lp.attrs(0, "pcfg") and to_lp.acap_crypto(0)
          and not to_lp.crypto(0),
          f"{who}: the relay's cap-neg offer to linphone (RTP/AVP, tcap/acap/pcfg)", to_lp.summary())
    check(lp_ans.media[0]["proto"] == "RTP/SAVP" and len(lp_ans.crypto(0)) == 1 and lp_ans.attrs(0, "acfg"),
          f"{who}: linphone to take SRTP through cap-neg (RTP/SAVP, one a=crypto, a=acfg)", lp_ans.summary())
    expect_leg(to_dave, f"{who}: 200 OK to dave", "RTP/AVP", False, ctx)
    expect_tone(dave.decoded_wav(), 440, 1.5, f"{who}: dave")
    expect_tone(rec, 880, 1.5, f"{who}: linphone")
    after = relay.metrics()
    moved = [counter(after, "srtp_relay_packets_total", direction="out", transform=t)
             - counter(before, "srtp_relay_packets_total", direction="out", transform=t)
             for t in ("encrypt", "decrypt")]
    check(min(moved) >= 100, f"{who}: packets encrypted towards linphone and decrypted from it", moved)
    notes.append("linphone as cap-neg answerer: RTP/SAVP + acfg")
    lp.quit(ctx.procs)
    d = drops(relay.metrics())
    check(not d.get("auth_failed") and not d.get("replayed"), "no authentication failure or replay", d)
    return ", ".join(notes) + ", tone heard both ways"


def linphone_rekey(ctx):
    """Linphone with keep_srtp_keys=0 (a new key on both crypto tags in every re-INVITE) calls
    bob (plain, disabled) and holds and resumes three times: six re-keys. Linphone keeps sending
    while it holds; bob stops while held (recvonly) and must come back as soon as the resume
    re-INVITE is through."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio()
    b = ctx.base
    bob = Baresip(ctx.workdir, "bob", b + 22, b + 40, ctx.tone(660), None)
    bob.start(ctx.procs, 30)
    bob.wait_bound()
    lp = Linphone(ctx.workdir, "linphone", b + 30, b + 80, keep_srtp_keys=False)
    lp.start(ctx.procs)
    poll = MetricsPoller(relay, ["decrypt", "encrypt"])
    rec = os.path.join(ctx.workdir, "linphone.wav")
    off = len(lp.output())
    lp.send(f"call sip:disabled-{bob.sip_port}-bob@127.0.0.1:{kam.port}")
    lp.wait_output("connected", 8, off)
    t_connected = time.monotonic()
    lp.send(f"play {ctx.tone(440)}")
    lp.send(f"record {rec}")
    time.sleep(2)
    reinvites, talk = [], [(t_connected + 0.5, None)]  # (start, end) of stretches bob talks in
    for _ in range(3):
        for cmd, done in (("pause", "is now paused"), ("resume", "Media streams established")):
            off = len(lp.output())
            t0 = time.monotonic()
            lp.send(cmd)
            lp.wait_output(done, 5, off)
            t1 = time.monotonic()
            reinvites.append(t1 - t0)
            if cmd == "pause":
                talk[-1] = (talk[-1][0], t0)
                time.sleep(1)
            else:
                talk.append((t1, None))
                lp.send(f"play {ctx.tone(440)}")
                time.sleep(1.5)
    t_end = time.monotonic()
    talk[-1] = (talk[-1][0], t_end)
    off = len(lp.output())
    lp.send("terminate")
    lp.wait_output("ended", 5, off)
    poll.stop()
    lp.quit(ctx.procs)

    # Six re-INVITEs from linphone, each with keys it never used before.
    msgs = kam.messages()
    offers = [m.sdp() for d, _, m in msgs if d == "in" and m.is_request and m.method == "INVITE"
              and m.sdp() and m.headers.get("from", "").find("linphone") >= 0]
    check(len(offers) == 7, "linphone's INVITE and six re-INVITEs with SDP", len(offers))
    seen = set()
    for n, sdp in enumerate(offers):
        keys = {k for _, _, k in sdp.crypto(0)}
        check(keys and not (keys & seen), f"offer {n} from linphone to carry keys never used before",
              f"{len(keys)} keys, {len(keys & seen)} reused")
        seen |= keys
    answers = [m.sdp() for d, dst, m in msgs if d == "out" and dst == f"127.0.0.1:{lp.sip_port}"
               and m.status == 200 and m.method == "INVITE" and m.sdp()]
    relay_keys = {k for sdp in answers for _, _, k in sdp.crypto(0)}
    check(len(answers) == 7 and len(relay_keys) == 1,
          "seven answers to linphone, all with the relay's one unchanged key", f"{len(answers)} answers, "
          f"{len(relay_keys)} distinct keys")
    m = relay.metrics()
    rekeys = counter(m, "srtp_relay_rekeys_total")
    check(rekeys >= 6, "the relay to count at least 6 re-keys", rekeys)
    d = drops(m)
    check(not d.get("auth_failed") and not d.get("replayed"),
          "no packet refused across the re-keys (old-key packets in flight are accepted)", d)

    # Continuity. A re-INVITE takes this long (command to linphone's confirmation):
    reinv = max(reinvites)
    slack = 0.3  # the counters are scraped every 50 ms on a shared machine
    gap_ab, a, z = poll.longest_silence("decrypt", t_connected + 0.5, t_end)
    check(gap_ab <= reinv + slack,
          f"linphone to bob: no gap over {reinv + slack:.2f} s (longest re-INVITE {reinv:.2f} s + "
          f"{slack} s) across 6 re-keys",
          f"{gap_ab:.2f} s without packets between {a - t_connected:.2f} s and {z - t_connected:.2f} s "
          f"into the call (relay drops {d})")
    worst_ba = 0.0
    for start, end in talk:
        gap, a2, z2 = poll.longest_silence("encrypt", start, end)
        worst_ba = max(worst_ba, gap)
        check(gap <= reinv + slack,
              f"bob to linphone: no gap over {reinv + slack:.2f} s while not on hold",
              f"{gap:.2f} s without packets between {a2 - t_connected:.2f} s and {z2 - t_connected:.2f} s "
              f"into the call (relay drops {d})")
    # baresip's recorder stops at the first re-INVITE that changes the direction (its player
    # is restarted), so bob's file only covers the time before the first hold; what bob got
    # after the re-keys is the "decrypt" counter above: packets that authenticated under
    # linphone's new keys. Linphone's recording covers the whole call.
    expect_tone(bob.decoded_wav(), 440, 1.5, "bob (before the first hold)")
    expect_tone(rec, 660, 4.0, "linphone")
    return (f"{len(offers) - 1} re-INVITEs with new keys, {int(rekeys)} re-keys, longest gap "
            f"{gap_ab:.2f} s linphone to bob (at {a - t_connected:.1f}-{z - t_connected:.1f} s), "
            f"{worst_ba:.2f} s bob to linphone "
            f"(re-INVITE {reinv:.2f} s)")


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
    return (f"suites crossed both ways, {int(fwd)} packets, "
            f"tone {min(heard):.1f}-{max(heard):.1f} s per stream")


def offer_b_port(sdp):
    return sdp.media[0]["port"]


# ---------------------------------------------------------------------------------------------
# 6. SIPp: exact SDP offers that real phones send


UAC_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="{status}" rrs="true"/>
{after}
</scenario>
"""

UAC_ACK_BYE = """  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="1500"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>"""

# A non-2xx final response is acknowledged in the same transaction (RFC 3261 §17.1.1.3).
UAC_ACK_REJECT = """  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-1]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>"""

UAS_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:uas@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""

KEY_A = "MI1fKA4carK9sRbo1RitHcXoYTHf6N76t1B9OEQq"
KEY_B = "a5IF5WLbh0edJdTwaMCa9Vy51NXJqhFv0kmADn1e"

# Worked example E10: baresip's OSRTP offer (RTP/AVP with a=crypto).
OSRTP_OFFER = f"""v=0
o=- 3811448773 713579517 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {{port}} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}
a=ptime:20"""

# A phone that knows nothing of SRTP: plain RTP/AVP answer, no crypto, no acfg.
PLAIN_ANSWER = """v=0
o=uas 2000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv"""

# Worked example E8: SRTP audio and plain video in one SDP (a video phone such as Radvision).
TWO_MLINE_OFFER = """v=0
o=alice 5000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/SAVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:6nN1J3NtHzq4nKI/4z2z+XrcX6NPl9gPuPCv5kRb
a=sendrecv
m=video {port2} RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1
a=sendrecv"""

# The callee takes the relay's cap-neg SRTP for audio (RFC 5939: RTP/SAVP, its own key, acfg)
# and keeps the video plain.
TWO_MLINE_ANSWER = f"""v=0
o=uas 2000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {{port}} RTP/SAVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}
a=acfg:1 t=1 a=1
a=sendrecv
m=video {{port2}} RTP/AVP 96
a=rtpmap:96 H264/90000
a=sendrecv"""

# Worked example E7: a legacy phone's plain offer.
PLAIN_OFFER = """v=0
o=legacy 4000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv"""

RELAY_CONFIG = """[security]
system = "best-effort"

[extensions."enforced"]
security = "enforce"
"""


def sipp_case(ctx, kam, name, user, service, offer, answer, status, uac_port, uas_port):
    """Runs one SIPp call through Kamailio: UAC (From `user`) -> `service` -> SIPp UAS. Returns
    the call's SIP messages and the relay's `query` taken while the call was up."""
    d = os.path.join(ctx.workdir, name)
    media = ctx.base + 50
    after = UAC_ACK_BYE if status == 200 else UAC_ACK_REJECT
    write(os.path.join(d, "uac.xml"), UAC_XML.format(
        user=user, status=status, sdp=offer.format(port=media, port2=media + 2),
        after=after.format(user=user)))
    uas = None
    if answer:
        sdp = answer.format(port=media + 10, port2=media + 12)
        write(os.path.join(d, "uas.xml"), UAS_XML.format(sdp=sdp))
        uas = sipp(ctx.procs, f"{name}-uas", os.path.join(d, "uas.xml"), None, uas_port)
        wait_until(f"{name}: SIPp UAS to listen", lambda: port_bound(uas_port), 5)
    uac = sipp(ctx.procs, f"{name}-uac", os.path.join(d, "uac.xml"), f"127.0.0.1:{kam.port}", uac_port,
               service=service)
    query = None
    if status == 200:
        def answered():
            for cid in ctx.relay.cmd({"command": "list"}).get("calls", []):
                q = ctx.relay.cmd({"command": "query", "call-id": cid})
                if q.get("to-tag"):
                    return q
        query = wait_until(f"{name}: the call to be answered at the relay", answered, 8)
    rc = ctx.procs.wait(uac, 15)
    errors = os.path.join(d, f"{name}-uac-errors.log")
    errors = open(errors).read()[-400:] if os.path.exists(errors) else ""
    check(rc == 0, f"{name}: SIPp UAC to complete its scenario (exit 0)", f"exit {rc}: {errors}")
    if uas:
        rc = ctx.procs.wait(uas, 10)
        check(rc == 0, f"{name}: SIPp UAS to complete its scenario (exit 0)", f"exit {rc}")
    msgs = [m for m in kam.messages() if "SIPpTag00" in m[2].headers.get("from", "")
            and m[2].headers.get("from", "").startswith(user)]
    return msgs, query


def sipp_offers(ctx):
    """Three offers real phones send, through Kamailio and the relay to a SIPp UAS."""
    relay = ctx.start_relay(config=RELAY_CONFIG)
    kam = ctx.start_kamailio()
    b = ctx.base
    uas_port = b + 24

    # OSRTP (RFC 8643) from a best-effort caller to a plain callee: the caller must get an
    # RTP/AVP answer with one a=crypto (never RTP/SAVP), the callee the relay's own cap-neg
    # offer, and the relay transcodes.
    msgs, q = sipp_case(ctx, kam, "osrtp", "osrtp", f"besteffort-{uas_port}-uas", OSRTP_OFFER,
                        PLAIN_ANSWER, 200, b + 20, uas_port)
    to_uas = must(find(msgs, "out", dst=f"127.0.0.1:{uas_port}", method="INVITE"),
                  "osrtp: INVITE to the UAS").sdp()
    to_uac = must(find(msgs, "out", dst=f"127.0.0.1:{b + 20}", status=200), "osrtp: 200 OK to the UAC").sdp()
    check(to_uas.media[0]["proto"] == "RTP/AVP" and not to_uas.crypto(0) and to_uas.attrs(0, "pcfg")
          and to_uas.attrs(0, "tcap") == ["tcap:1 RTP/SAVP"] and KEY_A not in to_uas.text,
          "osrtp: the callee offered RTP/AVP with the relay's tcap/acap/pcfg, no a=crypto, "
          "not the caller's key",
          to_uas.summary())
    got = to_uac.crypto(0)
    check(to_uac.media[0]["proto"] == "RTP/AVP" and len(got) == 1 and got[0][:2] == ("1", SUITE["80"])
          and got[0][2] != KEY_A and not capneg_leaks(to_uac),
          "osrtp: answer RTP/AVP with exactly a=crypto:1 AES_CM_128_HMAC_SHA1_80 and the relay's key",
          to_uac.summary())
    st = q["streams"][0]
    check((st["from-A"], st["from-B"]) == ("decrypt", "encrypt"),
          "osrtp: SRTP from the caller decrypted, plain from the callee encrypted", st)

    # Two m-lines: SRTP audio and plain video. Audio stays SRTP on both legs, video plain, each
    # m-line decided on its own.
    msgs, q = sipp_case(ctx, kam, "two-mlines", "video", f"besteffort-{uas_port}-uas",
                        TWO_MLINE_OFFER, TWO_MLINE_ANSWER, 200, b + 26, uas_port)
    to_uas = must(find(msgs, "out", dst=f"127.0.0.1:{uas_port}", method="INVITE"),
                  "two-mlines: INVITE to the UAS").sdp()
    to_uac = must(find(msgs, "out", dst=f"127.0.0.1:{b + 26}", status=200),
                  "two-mlines: 200 OK to the UAC").sdp()
    check(len(to_uas.media) == 2 and ("acap:1 crypto:1 " + SUITE["80"]) in " ".join(to_uas.media[0]["attrs"]),
          "two-mlines: the callee offered audio with a=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 "
          "and a video m-line",
          to_uas.summary())
    check(len(to_uac.media) == 2
          and to_uac.media[0]["proto"] == "RTP/SAVP" and len(to_uac.crypto(0)) == 1
          and to_uac.crypto(0)[0][:2] == ("1", SUITE["80"])
          and to_uac.media[1]["proto"] == "RTP/AVP" and not to_uac.crypto(1) and to_uac.media[1]["port"] != 0
          and not capneg_leaks(to_uac) and KEY_B not in to_uac.text,
          "two-mlines: answer audio RTP/SAVP with one a=crypto:1 (relay key), "
          "video RTP/AVP plain on a live port",
          to_uac.summary())
    audio, video = q["streams"]
    check((audio["from-A"], audio["from-B"], video["from-A"], video["from-B"])
          == ("decrypt+encrypt", "decrypt+encrypt", "plain", "plain"),
          "two-mlines: audio decrypt+encrypt both ways, video plain both ways", q["streams"])

    # Enforce: a plain offer from an extension the relay's config puts under enforce. The relay
    # refuses it and Kamailio turns that into 488; the callee never sees the call.
    msgs, _ = sipp_case(ctx, kam, "enforce-488", "enforced", f"besteffort-{uas_port}-uas", PLAIN_OFFER,
                        None, 488, b + 28, uas_port)
    check(not find(msgs, "out", dst=f"127.0.0.1:{uas_port}", method="INVITE"),
          "enforce-488: no INVITE to the callee", "one was forwarded")
    # Kamailio's stateless 488 does not pass its onsend_route; SIPp's own trace shows it.
    trace = open(os.path.join(ctx.workdir, "enforce-488", "enforce-488-uac-msgs.log")).read()
    check("SIP/2.0 488 Not Acceptable Here" in trace, "enforce-488: the caller to receive 488",
          [line for line in trace.splitlines() if line.startswith("SIP/2.0")])
    log = open(relay.proc.logpath).read()
    want = "media security enforce: m-line 0 (audio): offer has no usable SRTP"
    check(want in log, f"enforce-488: the relay's reason '{want}'",
          [line for line in log.splitlines() if 'result="error"' in line])
    wait_until("no call left at the relay", lambda: relay.cmd({"command": "list"}).get("calls") == [], 5)
    return "OSRTP answered RTP/AVP+crypto, audio SRTP + video plain, enforce refusal became 488"


# ---------------------------------------------------------------------------------------------
# 7-13. The operator's Kamailio config, deploy/kamailio/kamailio.cfg, as it is (laid out like
# Kamailio's shipped default config: rtpengine_manage() in branch_route, onreply_route,
# failure_route and for the ACK and BYE), with the lab routing of kamailio-lab.cfg: forking, early
# media, long ringing, T.38, delayed offer, stream continuity.


def wait_sip(kam, what, timeout=8, **kw):
    """Waits until Kamailio has logged the message `find(msgs, **kw)` picks, and returns it."""
    return wait_until(what, lambda: find(kam.messages(), **kw), timeout)


def tag_of(header):
    return header.partition(";tag=")[2].split(";")[0]


def manage_forking(ctx):
    """alice (srtp-mand, 440 Hz) calls sip:enforce-<port>-bob-<port>-carol: Kamailio forks to
    both, rtpengine_manage() offering once per branch. carol (answermode early) sends 183 with
    SDP, which the relay takes as the answer: alice's early media goes to her (baresip 1.0 sends
    none in early mode). 1.5 s later bob (660 Hz) answers: his 200 OK comes from a new to-tag,
    takes the answering side, and tm CANCELs carol."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio("deploy")
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    alice = Baresip(ctx.workdir, "alice", b + 20, b + 40, ctx.tone(440), "srtp-mand")
    bob = Baresip(ctx.workdir, "bob", b + 22, b + 60, ctx.tone(660), "srtp-mand", "manual", b + 28)
    carol = Baresip(ctx.workdir, "carol", b + 24, b + 80, ctx.tone(880), "srtp-mand", "early")
    for ua in (bob, carol):
        ua.start(ctx.procs, 11)
    for ua in (bob, carol):
        ua.wait_bound()
    at = {ua.name: f"127.0.0.1:{ua.sip_port}" for ua in (alice, bob, carol)}
    alice.start(ctx.procs, 8, dial=f"sip:enforce-{b + 22}-bob-{b + 24}-carol@127.0.0.1:{kam.port}")
    early = wait_sip(kam, "carol's 183 with SDP forwarded to alice", direction="out",
                     dst=at["alice"], status=183, method="INVITE")
    time.sleep(1.5)
    q_early = relay.cmd({"command": "query", "call-id": early.call_id})
    bob.command("accept")
    ok = wait_sip(kam, "bob's 200 OK forwarded to alice", direction="out", dst=at["alice"],
                  status=200, method="INVITE")
    time.sleep(1.5)
    q = relay.cmd({"command": "query", "call-id": ok.call_id})
    ctx.procs.wait(alice.proc, 15)
    for ua in (bob, carol):
        ctx.procs.wait(ua.proc, 10)
    msgs = one_call(kam.messages())
    to_bob = must(find(msgs, "out", dst=at["bob"], method="INVITE"), "the INVITE branch to bob")
    to_carol = must(find(msgs, "out", dst=at["carol"], method="INVITE"),
                    "the INVITE branch to carol")
    expect_leg(to_bob.sdp(), "INVITE to bob", "RTP/SAVP", True, ctx)
    check(to_bob.sdp().media[0]["port"] == to_carol.sdp().media[0]["port"]
          and to_bob.sdp().keys() == to_carol.sdp().keys(),
          "both branches offered the same relay port and keys (a repeated offer)",
          f"bob {to_bob.sdp().summary()}, carol {to_carol.sdp().summary()}")
    # tm's own CANCEL does not pass onsend_route; carol's 200 OK to it shows it came.
    must(find(msgs, "in", dst=at["carol"], status=200, method="CANCEL", with_sdp=False),
         "tm to CANCEL carol (her 200 OK to the CANCEL)")
    must(find(msgs, "in", dst=at["carol"], status=487, method="INVITE", with_sdp=False),
         "carol's 487 after the CANCEL")
    bob_tag, carol_tag = tag_of(ok.headers["to"]), tag_of(early.headers["to"])
    check(bob_tag and carol_tag and bob_tag != carol_tag,
          "the 183 and the 200 OK from two to-tags", (carol_tag, bob_tag))
    early_rtp = q_early.get("totals", {}).get("RTP", {}).get("packets", 0)
    check(q_early.get("to-tag") == carol_tag and early_rtp >= 25,
          f"while ringing, the call answered by carol's tag {carol_tag} with alice's early media "
          "forwarded (>= 25 RTP packets in the totals)",
          {k: q_early.get(k) for k in ("result", "from-tag", "to-tag", "totals")})
    check(q.get("to-tag") == bob_tag and q["totals"]["RTP"]["packets"] > early_rtp + 50,
          f"after the 200 OK, the call answered by bob's tag {bob_tag}, its RTP totals growing",
          {k: q.get(k) for k in ("result", "from-tag", "to-tag", "totals")})
    expect_tone(bob.decoded_wav(), 440, 2.5, "bob")
    got, _ = expect_tone(alice.decoded_wav(), 660, 2.5, "alice")
    expect_relay_clean(ctx, relay)
    d = drops(relay.metrics())
    check(not d.get("replayed") and d.get("auth_failed", 0) <= 3,
          "no replay; at most the 3 plain RTCP BYEs of baresip's hang-ups refused", d)
    return (f"both branches offered the same port and keys; alice's early media to carol "
            f"({early_rtp} packets), then bob's 200 OK from a new to-tag took over (tone both "
            f"ways, {got:.1f} s at alice), carol CANCELled, drops {d}")

# SIPp for the dialog scenarios: SIPp signals, Endpoints (media.py) on the SDPs' ports carry the
# media. The caller is the UAC (From "caller"), the callee the UAS; each keeps the other's
# From/To header (with its tag) in a variable for its requests within the dialog.


def sipp_xml(name, *steps):
    return ('<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
            f'<scenario name="{name}">\n' + "\n".join(steps) + "\n</scenario>\n")


def sipp_send(*lines, sdp=None, retrans=False):
    """A message: its start line and headers, then `sdp` as the body (or none)."""
    body = ["Content-Length: 0", ""] if sdp is None else [
        "Content-Type: application/sdp", "Content-Length: [len]", "", sdp]
    attr = ' retrans="500"' if retrans else ""
    return f"  <send{attr}><![CDATA[\n" + "\n".join(list(lines) + body) + "\n]]></send>"


def sipp_recv(what, optional=False, keep=None):
    """Waits for a response ('183') or a request ('INVITE'). `keep` = (header, variable): store
    that header of it, and take the dialog's route set and remote target from it."""
    attr = f'response="{what}"' if what.isdigit() else f'request="{what}"'
    if optional:
        return f'  <recv {attr} optional="true"/>'
    if not keep:
        return f"  <recv {attr}/>"
    return (f'  <recv {attr} rrs="true"><action><ereg regexp=".*" search_in="hdr" '
            f'header="{keep[0]}:" assign_to="{keep[1]}"/></action></recv>')


def sipp_pause(ms):
    return f'  <pause milliseconds="{ms}"/>'


CALLER_FROM = "From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
CALLEE_FROM = "From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]"


def caller_invite(sdp):
    """The caller's INVITE to the proxy's [service] (the R-URI user Kamailio routes on), and
    the 100 Trying it may get."""
    return sipp_send(
        "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]", CALLER_FROM,
        "To: <sip:[service]@[remote_ip]:[remote_port]>", "Call-ID: [call_id]", "CSeq: 1 INVITE",
        "Contact: <sip:caller@[local_ip]:[local_port]>", "Max-Forwards: 70",
        sdp=sdp, retrans=True) + "\n" + sipp_recv("100", optional=True)


def in_dialog(method, cseq, who, sdp=None):
    """A request within the dialog from `who` ("caller": To is $callee; "callee": To is
    $caller), to the remote target along the route set."""
    mine, theirs = (CALLER_FROM, "callee") if who == "caller" else (CALLEE_FROM, "caller")
    return sipp_send(
        f"{method} [next_url] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]", mine,
        f"To:[${theirs}]", "[routes]", "Call-ID: [call_id]", f"CSeq: {cseq} {method}",
        f"Contact: <sip:{who}@[local_ip]:[local_port]>", "Max-Forwards: 70",
        sdp=sdp, retrans=method != "ACK")


def reply(status, who, sdp=None, first=False):
    """A response to the last request; `first`: the callee's to the INVITE (its tag and the
    Record-Route)."""
    to = "[last_To:];tag=[pid]SIPpTag01[call_number]" if first else "[last_To:]"
    lines = [f"SIP/2.0 {status}", "[last_Via:]", "[last_From:]", to, "[last_Call-ID:]",
             "[last_CSeq:]"]
    if first:
        lines.append("[last_Record-Route:]")
    return sipp_send(*lines, f"Contact: <sip:{who}@[local_ip]:[local_port]>", sdp=sdp)


def caller_answered(talk_ms, ack_sdp=None):
    """The caller takes the 200 OK, ACKs it (with `ack_sdp`: the answer to a delayed offer),
    talks for `talk_ms`, hangs up."""
    return [sipp_recv("200", keep=("To", "callee")), in_dialog("ACK", 1, "caller", ack_sdp),
            sipp_pause(talk_ms), in_dialog("BYE", 2, "caller"), sipp_recv("200")]


CALLEE_INVITED = sipp_recv("INVITE")
CALLEE_BYE = [sipp_recv("ACK"), sipp_recv("BYE"), reply("200 OK", "callee")]
KEY_C = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"


def sdp_audio(who, port, key=None, version=1, extra=(), codec=(0, "PCMU/8000")):
    """A phone's audio SDP: one codec (PCMU), RTP/SAVP with one AES_CM_128_HMAC_SHA1_80 key,
    or RTP/AVP."""
    lines = ["v=0", f"o={who} 1000 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1",
             "t=0 0", f"m=audio {port} {'RTP/SAVP' if key else 'RTP/AVP'} {codec[0]}",
             f"a=rtpmap:{codec[0]} {codec[1]}"]
    if key:
        lines.append(f"a=crypto:1 {SUITE['80']} inline:{key}")
    return "\n".join(lines + list(extra) + ["a=sendrecv"])


def sdp_t38(who, port, version):
    """A fax gateway's T.38 SDP: the audio m-line becomes image/udptl."""
    return "\n".join([
        "v=0", f"o={who} 1000 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        f"m=image {port} udptl t38", "a=T38FaxVersion:0", "a=T38MaxBitRate:14400",
        "a=T38FaxRateManagement:transferredTCF", "a=T38FaxMaxBuffer:262",
        "a=T38FaxMaxDatagram:176", "a=T38FaxUdpEC:t38UDPRedundancy"])


def sipp_dialog(ctx, kam, name, policy, caller_steps, callee_steps, n=0):
    """Starts SIPp as callee (UAS) and caller (UAC) for call `n` of a scenario, through
    Kamailio to sip:<policy>-<callee port>-callee: caller on base+20+10n, callee on
    base+22+10n (SIPp's own media sockets on base+70+10n..+76, unused but by
    play_pcap_audio, which sends from the caller's). Returns the two processes and their
    addresses as Kamailio logs them."""
    d = os.path.join(ctx.workdir, name)
    uac, uas = ctx.base + 20 + 10 * n, ctx.base + 22 + 10 * n
    write(os.path.join(d, "uac.xml"), sipp_xml("caller", *caller_steps))
    write(os.path.join(d, "uas.xml"), sipp_xml("callee", *callee_steps))
    callee = sipp(ctx.procs, f"{name}-uas", os.path.join(d, "uas.xml"), None, uas,
                  extra=("-mp", str(ctx.base + 74 + 10 * n)))
    wait_until(f"{name}: SIPp callee to listen", lambda: port_bound(uas), 5)
    caller = sipp(ctx.procs, f"{name}-uac", os.path.join(d, "uac.xml"), f"127.0.0.1:{kam.port}",
                  uac, service=f"{policy}-{uas}-callee", extra=("-mp", str(ctx.base + 70 + 10 * n)))
    return caller, callee, f"127.0.0.1:{uac}", f"127.0.0.1:{uas}"


def sipp_done(ctx, name, *procs):
    for p in procs:
        rc = ctx.procs.wait(p, 20)
        path = os.path.join(ctx.workdir, name, f"{p.name}-errors.log")
        errors = open(path).read()[-400:] if os.path.exists(path) else ""
        check(rc == 0, f"{p.name}: SIPp to complete its scenario (exit 0)", f"exit {rc}: {errors}")


def relay_crypto(sdp, tag="1"):
    """(suite, key) of the relay's a=crypto (or cap-neg a=acap) line `tag` in an SDP it wrote."""
    for t, suite, key in sdp.crypto(0) + sdp.acap_crypto(0):
        if t == tag:
            return suite, key
    raise Fail(f"a crypto line with tag {tag} in the relay's SDP; got {sdp.summary()}")


def expect_flow(a, b, since, until, who, least):
    """At least `least` intact packets each way between Endpoints `a` and `b` in [since, until]."""
    ab, ba = b.heard(a.name, since, until), a.heard(b.name, since, until)
    check(ab >= least and ba >= least, f"{who}: at least {least} intact packets each way",
          f"{a.name} to {b.name} {ab}, {b.name} to {a.name} {ba}")
    return min(ab, ba)


def early_media_call(ctx, kam, n, changed):
    """One call of sipp_early_media; `changed`: the 200 OK moves the callee to a new port and
    key."""
    name = "changed-200" if changed else "same-200"
    b = ctx.base + 10 * n
    early_sdp = sdp_audio("callee", b + 42, KEY_B)
    final_sdp = sdp_audio("callee", b + 44, KEY_C, version=2) if changed else early_sdp
    caller, callee, at_uac, at_uas = sipp_dialog(
        ctx, kam, name, "enforce",
        [caller_invite(sdp_audio("caller", b + 40, KEY_A)), sipp_recv("180", optional=True),
         sipp_recv("183")] + caller_answered(2500),
        [CALLEE_INVITED, reply("183 Session Progress", "callee", early_sdp, first=True),
         sipp_pause(2000), reply("200 OK", "callee", final_sdp, first=True)] + CALLEE_BYE, n)
    e183 = wait_sip(kam, f"{name}: the 183 with SDP forwarded to the caller", direction="out",
                    dst=at_uac, status=183, method="INVITE")
    offer = must(find(kam.messages(), "out", dst=at_uas, method="INVITE"),
                 f"{name}: the INVITE to the callee").sdp()
    a = Endpoint("caller", b + 40, tx=(SUITE["80"], KEY_A), rx=relay_crypto(e183.sdp()))
    z = Endpoint("callee", b + 42, tx=(SUITE["80"], KEY_B), rx=relay_crypto(offer))
    a.send_to(e183.sdp().media[0]["port"])
    z.send_to(offer.media[0]["port"])
    t0 = time.monotonic()
    ok = wait_sip(kam, f"{name}: the 200 OK forwarded to the caller", direction="out",
                  dst=at_uac, status=200, method="INVITE")
    t_ok = time.monotonic()
    early = expect_flow(a, z, t0 + 0.3, t_ok, f"{name}: early media after the 183", 25)
    if changed:
        z.stop()
        z = Endpoint("moved", b + 44, tx=(SUITE["80"], KEY_C), rx=relay_crypto(offer))
        z.send_to(offer.media[0]["port"])
    time.sleep(1.5)
    late = expect_flow(a, z, t_ok + 0.4, time.monotonic(), f"{name}: media after the 200 OK", 40)
    errors, sources = a.errors() + z.errors(), (a.sources(), z.sources())
    for e in (a, z):
        e.stop()
    sipp_done(ctx, name, caller, callee)
    check(not errors and sources == ({e183.sdp().media[0]["port"]}, {offer.media[0]["port"]}),
          f"{name}: every packet intact, each side's from the relay port in its SDP",
          f"{errors} broken packets, sources {sources}")
    s183, s200 = e183.sdp(), ok.sdp()
    if changed:
        check(s200.media[0]["port"] == s183.media[0]["port"] and s200.keys() == s183.keys(),
              f"{name}: the caller's 200 OK keeps the 183's relay port and key",
              f"183 {s183.summary()} port {s183.media[0]['port']}, "
              f"200 {s200.summary()} port {s200.media[0]['port']}")
    else:
        check(s200.text == s183.text, f"{name}: the 200 OK's SDP to the caller identical to the "
              "183's (port, key, o= version)", f"183:\n{s183.text}\n200:\n{s200.text}")
    return f"{name}: {early} packets each way early, {late} after the 200 OK"


def sipp_early_media(ctx):
    """183 with SDP, then the 200 OK 2 s later, through deploy/kamailio/kamailio.cfg with SRTP on both
    legs (the callee's under enforce): in the first call the 200 OK repeats the 183's SDP, in
    the second it brings a new port and a new key. Media both ways from the 183 on, and after
    the 200 OK from the callee's new port with its new key."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio("deploy")
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    notes = [early_media_call(ctx, kam, n, changed) for n, changed in enumerate((False, True))]
    expect_relay_clean(ctx, relay)
    d = drops(relay.metrics())
    check(not d.get("auth_failed") and not d.get("replayed"), "no packet refused", d)
    return "; ".join(notes)


RINGING_CONFIG = """[timeouts]
media = 2
"""


def sipp_long_ringing(ctx):
    """The relay runs with timeouts.media = 2 s. The callee sends 180 Ringing (no SDP) and
    answers 4.5 s later: the offered call outlives the media timeout (timeouts.ringing), media
    flows both ways after the 200 OK, and once it stops the answered call ends 2 s later,
    before the BYE (whose delete gets the relay's ok for a call it no longer has)."""
    relay = ctx.start_relay(config=RINGING_CONFIG)
    kam = ctx.start_kamailio("deploy")
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    caller, callee, at_uac, at_uas = sipp_dialog(
        ctx, kam, "ringing", "disabled",
        [caller_invite(sdp_audio("caller", b + 40)), sipp_recv("180")] + caller_answered(7000),
        [CALLEE_INVITED, reply("180 Ringing", "callee", first=True), sipp_pause(4500),
         reply("200 OK", "callee", sdp_audio("callee", b + 42), first=True)] + CALLEE_BYE)
    ring = wait_sip(kam, "the 180 Ringing forwarded to the caller", direction="out", dst=at_uac,
                    status=180, method="INVITE", with_sdp=False)
    t_ring = time.monotonic()
    time.sleep(3.5)
    q = relay.cmd({"command": "query", "call-id": ring.call_id})
    check(q.get("result") == "ok" and ring.call_id in relay.cmd({"command": "list"})["calls"],
          "the call still at the relay 3.5 s into ringing, past timeouts.media (2 s)", q)
    ok = wait_sip(kam, "the 200 OK forwarded to the caller", direction="out", dst=at_uac,
                  status=200, method="INVITE")
    rang = time.monotonic() - t_ring
    offer = must(find(kam.messages(), "out", dst=at_uas, method="INVITE"),
                 "the INVITE to the callee").sdp()
    a, z = Endpoint("caller", b + 40), Endpoint("callee", b + 42)
    a.send_to(ok.sdp().media[0]["port"])
    z.send_to(offer.media[0]["port"])
    t0 = time.monotonic()
    time.sleep(1.5)
    flow = expect_flow(a, z, t0 + 0.3, time.monotonic(), "after the 200 OK", 40)
    for e in (a, z):
        e.stop()
    t_stop = time.monotonic()
    wait_until("the relay to end the answered call within 4.5 s once its media stopped",
               lambda: ring.call_id not in relay.cmd({"command": "list"})["calls"], 4.5)
    quiet = time.monotonic() - t_stop
    check(quiet >= 1.8, "the answered call to live until 2 s without media (timeouts.media)",
          f"it ended {quiet:.1f} s after the last packet")
    sipp_done(ctx, "ringing", caller, callee)
    expect_relay_clean(ctx, relay, ended_before_bye=True)
    return (f"rang {rang:.1f} s with timeouts.media = 2 s, {flow} packets each way after the "
            f"200 OK, the call ended {quiet:.1f} s after its media stopped")


def sipp_t38(ctx):
    """An SRTP audio call (the callee's leg under enforce); then the callee, a fax gateway,
    re-INVITEs to T.38 (m=image udptl t38 in place of the audio, new ports on both sides), both
    sides sending audio until its ACK. UDPTL datagrams from the new ports both ways arrive byte
    for byte through the relay's ports in the SDPs."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio("deploy")
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    caller, callee, at_uac, at_uas = sipp_dialog(
        ctx, kam, "t38", "enforce",
        [caller_invite(sdp_audio("caller", b + 40, KEY_A)), sipp_recv("180", optional=True),
         sipp_recv("200", keep=("To", "callee")), in_dialog("ACK", 1, "caller"),
         sipp_recv("INVITE"), reply("200 OK", "caller", sdp_t38("caller", b + 46, 2)),
         sipp_recv("ACK"), sipp_pause(2500), in_dialog("BYE", 2, "caller"), sipp_recv("200")],
        [sipp_recv("INVITE", keep=("From", "caller")),
         reply("200 OK", "callee", sdp_audio("callee", b + 42, KEY_B), first=True),
         sipp_recv("ACK"), sipp_pause(1500),
         in_dialog("INVITE", 1, "callee", sdp_t38("callee", b + 48, 2)),
         sipp_recv("100", optional=True), sipp_recv("200"), in_dialog("ACK", 1, "callee"),
         sipp_recv("BYE"), reply("200 OK", "callee")])
    ok = wait_sip(kam, "the 200 OK forwarded to the caller", direction="out", dst=at_uac,
                  status=200, method="INVITE")
    offer = must(find(kam.messages(), "out", dst=at_uas, method="INVITE"),
                 "the INVITE to the callee").sdp()
    a = Endpoint("caller", b + 40, tx=(SUITE["80"], KEY_A), rx=relay_crypto(ok.sdp()))
    z = Endpoint("callee", b + 42, tx=(SUITE["80"], KEY_B), rx=relay_crypto(offer))
    a.send_to(ok.sdp().media[0]["port"])
    z.send_to(offer.media[0]["port"])
    t0 = time.monotonic()
    # Like a gateway, each side keeps sending audio until it switches, a moment after the
    # re-INVITE's ACK.
    wait_sip(kam, "the callee's ACK to the caller's 200 OK for the T.38 re-INVITE",
             direction="out", dst=at_uac, method="ACK", with_sdp=False)
    time.sleep(0.1)
    audio = expect_flow(a, z, t0 + 0.3, time.monotonic(), "SRTP audio before the re-INVITE", 25)
    for e in (a, z):
        e.stop()
    t38_ok = must(find(kam.messages(), "out", dst=at_uas, status=200, method="INVITE"),
                  "the caller's 200 OK to the T.38 re-INVITE forwarded to the callee")
    reinvite = must(find(kam.messages(), "out", dst=at_uac, method="INVITE"),
                    "the T.38 re-INVITE to the caller").sdp()
    fa = Endpoint("fax-a", b + 46, "udptl")
    fz = Endpoint("fax-z", b + 48, "udptl")
    fa.send_to(reinvite.media[0]["port"])
    fz.send_to(t38_ok.sdp().media[0]["port"])
    t1 = time.monotonic()
    time.sleep(1.2)
    q = relay.cmd({"command": "query", "call-id": ok.call_id})
    az, za = fz.heard("fax-a", t1 + 0.2), fa.heard("fax-z", t1 + 0.2)
    latched = [(s["latched-A"], s["latched-B"]) for s in q.get("streams", [])]
    check(min(az, za) >= 40,
          "UDPTL after the re-INVITE: at least 40 datagrams each way from the new ports",
          f"caller to callee {az}, callee to caller {za}; the relay latched (A, B) to {latched} "
          f"while the SDPs name 127.0.0.1:{b + 46} (caller) and 127.0.0.1:{b + 48} (callee)")
    errors, sources = fa.errors() + fz.errors(), (fa.sources(), fz.sources())
    for e in (fa, fz):
        e.stop()
    sipp_done(ctx, "t38", caller, callee)
    lo = ctx.base + 100
    for who, sdp in (("re-INVITE to the caller", reinvite), ("200 OK to the callee", t38_ok.sdp())):
        m = sdp.media[0]
        check(len(sdp.media) == 1 and (m["kind"], m["proto"]) == ("image", "udptl")
              and lo <= m["port"] < lo + 100 and not sdp.crypto(0)
              and len([a for a in m["attrs"] if a.startswith("T38")]) == 6,
              f"{who}: m=image on a relay port, udptl, the six T38 attributes, no crypto",
              f"{sdp.summary()} port {m['port']}: {m['attrs']}")
    check(not errors and sources == ({reinvite.media[0]["port"]}, {t38_ok.sdp().media[0]["port"]}),
          "every UDPTL datagram byte for byte, each side's from the relay port in its SDP",
          f"{errors} altered, sources {sources}")
    check([(s["from-A"], s["from-B"]) for s in q.get("streams", [])] == [("opaque", "opaque")],
          "the relay's query: the m-line relayed opaque both ways", q.get("streams"))
    expect_relay_clean(ctx, relay)
    opaque = counter(relay.metrics(), "srtp_relay_packets_total", direction="out",
                     transform="opaque")
    return (f"{audio} SRTP packets each way, then the T.38 re-INVITE: {min(az, za)} UDPTL "
            f"datagrams each way byte for byte ({int(opaque)} opaque at the relay)")


def sipp_delayed_offer(ctx):
    """The caller's INVITE has no SDP. The callee offers SRTP in its 200 OK (rtpengine_manage:
    an offer from the callee's tag), the relay offers the caller its cap-neg SRTP (RTP/AVP with
    a=acap, best-effort), the caller answers in the ACK (RTP/SAVP, a=acfg), and the callee gets
    the relay's answer in the ACK. SRTP media both ways."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio("deploy")
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    answer = sdp_audio("caller", b + 40, KEY_A, extra=["a=acfg:1 t=1 a=1"])
    caller, callee, at_uac, at_uas = sipp_dialog(
        ctx, kam, "delayed", "besteffort",
        [caller_invite(None), sipp_recv("180", optional=True)] + caller_answered(2500, answer),
        [CALLEE_INVITED, reply("200 OK", "callee", sdp_audio("callee", b + 42, KEY_B),
                               first=True)] + CALLEE_BYE)
    ack = wait_sip(kam, "the caller's ACK with the answer forwarded to the callee",
                   direction="out", dst=at_uas, method="ACK")
    ok = must(find(kam.messages(), "out", dst=at_uac, status=200, method="INVITE"),
              "the 200 OK with the relay's offer to the caller")
    q = relay.cmd({"command": "query", "call-id": ok.call_id})
    a = Endpoint("caller", b + 40, tx=(SUITE["80"], KEY_A), rx=relay_crypto(ok.sdp()))
    z = Endpoint("callee", b + 42, tx=(SUITE["80"], KEY_B), rx=relay_crypto(ack.sdp()))
    a.send_to(ok.sdp().media[0]["port"])
    z.send_to(ack.sdp().media[0]["port"])
    t0 = time.monotonic()
    time.sleep(1.5)
    flow = expect_flow(a, z, t0 + 0.3, time.monotonic(), "SRTP after the ACK", 40)
    errors = a.errors() + z.errors()
    for e in (a, z):
        e.stop()
    sipp_done(ctx, "delayed", caller, callee)
    msgs = kam.messages()
    check(not find(msgs, "out", dst=at_uas, method="INVITE"),
          "the INVITE to the callee without SDP", "it had one")
    offer, relay_answer = ok.sdp(), ack.sdp()
    check(offer.media[0]["proto"] == "RTP/AVP" and offer.acap_crypto(0) and not offer.crypto(0)
          and KEY_B not in offer.text,
          "the caller offered the relay's cap-neg SRTP (RTP/AVP, a=acap, not the callee's key)",
          offer.summary())
    check(relay_answer.media[0]["proto"] == "RTP/SAVP"
          and [c[:2] for c in relay_answer.crypto(0)] == [("1", SUITE["80"])]
          and KEY_A not in relay_answer.text,
          "the callee's ACK with the relay's answer: RTP/SAVP, a=crypto:1 with the relay's key",
          relay_answer.summary())
    callee_tag = tag_of(ok.headers["to"])
    check(q.get("from-tag") == callee_tag
          and [(s["from-A"], s["from-B"]) for s in q["streams"]]
          == [("decrypt+encrypt", "decrypt+encrypt")],
          f"the relay's call offered by the callee's tag {callee_tag}, SRTP both ways",
          {k: q.get(k) for k in ("from-tag", "to-tag", "streams")})
    check(not errors, "every packet intact after decryption", f"{errors} broken")
    expect_relay_clean(ctx, relay)
    return f"offer in the 200 OK, answer in the ACK, {flow} SRTP packets each way"


# ---------------------------------------------------------------------------------------------
# 12-13. Stream continuity towards an SRTP phone (docs/behaviour.md §3b): whatever the source behind
# the
# relay does (a capture replayed under the same SSRC, a transfer to a new source, the first
# source coming back), the phone's one libsrtp receive context takes every packet.


G711A_PCAP = "/usr/share/sip-tester/g711a.pcap"


def pcap_rtp(path):
    """[(capture time, sequence number, timestamp, SSRC, marker, payload)] of the RTP in a
    libpcap file of Ethernet/IPv4/UDP frames (what SIPp's play_pcap_audio sends)."""
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise Fail(f"the capture Debian's sip-tester ships at {path}; got {e}") from None
    check(data[:4] == b"\xd4\xc3\xb2\xa1" and struct.unpack("<I", data[20:24])[0] == 1,
          f"{path}: a little-endian libpcap file of Ethernet frames", data[:24].hex())
    out, off = [], 24
    while off + 16 <= len(data):
        sec, usec, size, _ = struct.unpack("<IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + size]
        off += 16 + size
        ip = frame[14:]
        if frame[12:14] != b"\x08\x00" or ip[9] != 17:
            continue
        rtp = ip[(ip[0] & 0x0F) * 4 + 8:]
        b0, b1, seq, ts, ssrc = struct.unpack("!BBHII", rtp[:12])
        out.append((sec + usec / 1e6, seq, ts, ssrc, b1 >> 7, rtp[12 + 4 * (b0 & 0x0F):]))
    return out


def phone_streams(phone, who):
    """The packets the phone decrypted, per SSRC in arrival order, after checking that its one
    receive context refused none and that each SSRC's sequence numbers only advanced (every
    step forward by less than 2^15: no index twice under the key, and libsrtp's ROC guess
    right). Returns {ssrc: [(time, seq, ts, ssrc, marker, payload)]}."""
    check(not phone.failures,
          f"{who}: every packet the relay sent to the phone authenticated and decrypted under "
          "its one libsrtp receive context",
          f"{len(phone.failures)} refused ({sorted(set(phone.failures))}), "
          f"{len(phone.rtp)} decrypted")
    streams = {}
    for p in phone.rtp:
        streams.setdefault(p[3], []).append(p)
    for ssrc, pkts in streams.items():
        for k in range(1, len(pkts)):
            step = (pkts[k][1] - pkts[k - 1][1]) & 0xFFFF
            check(0 < step < 0x8000,
                  f"{who}: SSRC {ssrc:#010x}'s sequence numbers at the phone only advancing",
                  f"{pkts[k - 1][1]} then {pkts[k][1]} (packets {k - 1} and {k} of {len(pkts)})")
    return streams


def expect_restart(pkts, k, who):
    """Where the source behind the relay restarted (packet k of an SSRC's list), the phone got
    the number right after the last one (RFC 3550 continuity) with the marker bit set."""
    (_, s0, t0, _, _, _), (_, s1, t1, _, m1, _) = pkts[k - 1], pkts[k]
    check(s1 == (s0 + 1) & 0xFFFF and m1 == 1,
          f"{who}: at the restart, the sequence number right after the last one, marker set",
          f"{s0} (timestamp {t0}) then {s1} (timestamp {t1}), marker {m1}")


def sipp_pcap_twice(ctx):
    """SIPp (plain RTP/AVP) calls an SRTP phone (the callee's leg under enforce, through
    deploy/kamailio/kamailio.cfg) and plays sip-tester's g711a.pcap twice with play_pcap_audio: one
    SSRC whose sequence numbers and timestamps restart at the second play, as looping hold
    music does. The phone (a SIPp UAS for signalling, a Phone on its SDP's port for media)
    decrypts every packet of both plays with one receive context; none is dropped as
    replayed."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio("deploy")
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    cap = pcap_rtp(G711A_PCAP)
    check(len(cap) > 100 and len({p[3] for p in cap}) == 1,
          f"{G711A_PCAP}: one RTP stream of over 100 packets", f"{len(cap)} packets")
    length_ms = int((cap[-1][0] - cap[0][0]) * 1000) + 150
    play = (f'  <nop><action><exec play_pcap_audio="{G711A_PCAP}"/></action></nop>\n'
            + sipp_pause(length_ms))
    pcma = (8, "PCMA/8000")
    phone_sdp = sdp_audio("callee", b + 42, KEY_B, codec=pcma)
    # The caller's media port is SIPp's own (-mp, base+70): play_pcap_audio sends from it to
    # the port in the 200 OK's SDP.
    caller, callee, at_uac, at_uas = sipp_dialog(
        ctx, kam, "pcap", "enforce",
        [caller_invite(sdp_audio("caller", "[media_port]", codec=pcma)),
         sipp_recv("180", optional=True), sipp_recv("200", keep=("To", "callee")),
         in_dialog("ACK", 1, "caller"), play, play, in_dialog("BYE", 2, "caller"),
         sipp_recv("200")],
        [CALLEE_INVITED, reply("180 Ringing", "callee", first=True), sipp_pause(1000),
         reply("200 OK", "callee", phone_sdp, first=True)] + CALLEE_BYE)
    offer = wait_sip(kam, "the INVITE forwarded to the phone", direction="out", dst=at_uas,
                     method="INVITE").sdp()
    phone = Phone("phone", b + 42, tx=(SUITE["80"], KEY_B), rx=relay_crypto(offer))
    ok = wait_sip(kam, "the 200 OK forwarded to SIPp", direction="out", dst=at_uac, status=200,
                  method="INVITE")
    phone.send_to(offer.media[0]["port"])
    try:
        sipp_done(ctx, "pcap", caller, callee)
    finally:
        phone.stop()
    expect_leg(offer, "INVITE to the phone", "RTP/SAVP", True, ctx)
    expect_leg(ok.sdp(), "200 OK to SIPp", "RTP/AVP", False, ctx)
    ssrc = cap[0][3]
    streams = phone_streams(phone, "pcap")
    got = streams.get(ssrc, [])
    others = {f"{s:#010x}": len(p) for s, p in streams.items() if s != ssrc}
    check(len(got) == 2 * len(cap),
          f"the phone to decrypt both plays of the capture: {2 * len(cap)} packets under SSRC "
          f"{ssrc:#010x}",
          f"{len(got)} (other SSRCs {others}, relay drops {drops(relay.metrics())})")
    sent = [(p[2], p[5]) for p in cap] * 2
    bad = [k for k, p in enumerate(got) if (p[2], p[5]) != sent[k]]
    check(not bad, "the capture's timestamps and payloads, twice over, in order",
          f"{len(bad)} packets differ, the first is packet {bad[0] if bad else 0}")
    restart = len(cap)
    expect_restart(got, restart, "pcap")
    m = relay.metrics()
    d = drops(m)
    check(not d.get("replayed") and not d.get("auth_failed"),
          "no packet dropped as replayed (or failing authentication) at the relay", d)
    enc = counter(m, "srtp_relay_packets_total", direction="out", transform="encrypt")
    expect_relay_clean(ctx, relay)
    return (f"{len(got)} packets (2 x {len(cap)}) of SSRC {ssrc:#010x} decrypted with one "
            f"context, sequence {got[0][1]}-{got[restart - 1][1]} then {got[restart][1]} with "
            f"the marker at the restart, {int(enc)} encrypted, drops {d}")


def sipp_transfer(ctx):
    """A B2BUA's transfer towards an SRTP phone (the callee's leg under enforce, through
    deploy/kamailio/kamailio.cfg): the plain caller side sends from source X (SSRC X, sequence numbers
    from 10000); then re-INVITEs with the transfer target's address (a new port, a new SSRC,
    sequence numbers from 5); then re-INVITEs back to the first address, whose SSRC X restarts
    at 3. Media reaches the phone after each step and goes back to the current source; the
    phone's one receive context decrypts every packet and the relay drops none as replayed."""
    relay = ctx.start_relay()
    kam = ctx.start_kamailio("deploy")
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    phone_sdp = sdp_audio("callee", b + 42, KEY_B)
    ssrc_x, ssrc_y = 0x5EED0C11, 0x7A4A5FE4
    caller_steps = [caller_invite(sdp_audio("caller", b + 40)), sipp_recv("180", optional=True),
                    sipp_recv("200", keep=("To", "callee")), in_dialog("ACK", 1, "caller"),
                    sipp_pause(2000)]
    callee_steps = [CALLEE_INVITED, reply("180 Ringing", "callee", first=True),
                    sipp_pause(1000), reply("200 OK", "callee", phone_sdp, first=True),
                    sipp_recv("ACK")]
    for cseq, port in ((2, b + 44), (3, b + 40)):
        caller_steps += [in_dialog("INVITE", cseq, "caller", sdp_audio("caller", port,
                                                                       version=cseq)),
                         sipp_recv("100", optional=True), sipp_recv("200"),
                         in_dialog("ACK", cseq, "caller"), sipp_pause(2000)]
        callee_steps += [sipp_recv("INVITE"), reply("200 OK", "callee", phone_sdp),
                         sipp_recv("ACK")]
    caller, callee, at_uac, at_uas = sipp_dialog(
        ctx, kam, "transfer", "enforce",
        caller_steps + [in_dialog("BYE", 4, "caller"), sipp_recv("200")],
        callee_steps + [sipp_recv("BYE"), reply("200 OK", "callee")])
    offer = wait_sip(kam, "the INVITE forwarded to the phone", direction="out", dst=at_uas,
                     method="INVITE").sdp()
    phone = Phone("phone", b + 42, tx=(SUITE["80"], KEY_B), rx=relay_crypto(offer))
    sources = []  # (Endpoint, started at, relay port it sent to)
    steps = (("x1", b + 40, ssrc_x, 10000, "the call's first source (SSRC X)"),
             ("y", b + 44, ssrc_y, 5, "the transfer target (new SSRC, from 5)"),
             ("x2", b + 40, ssrc_x, 3, "the first source back (SSRC X restarting at 3)"))
    try:
        for n, (name, port, ssrc, seq, _) in enumerate(steps):
            ok = wait_sip(kam, f"the 200 OK to {'INVITE' if n == 0 else 're-INVITE'} {n + 1} "
                          "forwarded to the caller", direction="out", dst=at_uac, status=200,
                          method="INVITE", nth=n)
            if sources:
                sources[-1][0].stop()
            src = Endpoint(name, port, ssrc=ssrc, seq=seq)
            src.send_to(ok.sdp().media[0]["port"])
            if n == 0:  # the phone talks once it has answered
                phone.send_to(offer.media[0]["port"])
            sources.append((src, time.monotonic(), ok.sdp().media[0]["port"]))
        time.sleep(1.8)
        t_end = time.monotonic()
    finally:
        for src, _, _ in sources:
            src.stop()
        phone.stop()
    sipp_done(ctx, "transfer", caller, callee)
    msgs = kam.messages()
    to_phone = [m.sdp() for d, dst, m in msgs if d == "out" and dst == at_uas
                and m.is_request and m.method == "INVITE" and m.sdp()]
    check(len(to_phone) == 3
          and len({(s.media[0]["port"], relay_crypto(s)) for s in to_phone}) == 1,
          "the INVITE and both re-INVITEs to the phone with the same relay port and the same "
          "key under the tag it answered (its receive context stays valid)",
          [(s.media[0]["port"], s.summary()) for s in to_phone])
    expect_leg(to_phone[0], "INVITE to the phone", "RTP/SAVP", True, ctx)
    flows = []
    for k, ((src, t0, _), (name, _, _, _, what)) in enumerate(zip(sources, steps)):
        t1 = sources[k + 1][1] if k + 1 < len(sources) else t_end
        to_b, to_a = phone.heard(name, t0 + 0.3, t1), src.heard("phone", t0 + 0.3, t1)
        check(to_b >= 0.6 * (t1 - t0 - 0.3) / 0.02 and to_a >= 0.6 * (t1 - t0 - 0.3) / 0.02,
              f"step {k + 1}, {what}: media both ways through the relay "
              f"({t1 - t0 - 0.3:.1f} s, at least 60% of the packets)",
              f"to the phone {to_b}, from the phone {to_a} (relay drops "
              f"{drops(relay.metrics())})")
        flows.append(to_b)
    streams = phone_streams(phone, "transfer")
    for ssrc in (ssrc_x, ssrc_y):
        for _, _, ts, _, _, body in streams.get(ssrc, []):
            n = struct.unpack("!I", body[8:12])[0]
            check(ts == 160 * n, f"SSRC {ssrc:#010x}: the source's timestamps unchanged",
                  f"timestamp {ts} on packet {n}")
    xs = streams.get(ssrc_x, [])
    back = [k for k, p in enumerate(xs) if p[5][:2] == b"x2"]
    check(back and back[0] > 0, "SSRC X's packets from both its runs at the phone",
          f"{len(xs)} packets, {len(back)} of the second run")
    expect_restart(xs, back[0], "transfer: SSRC X back")
    errors = phone.errors() + sum(s.errors() for s, _, _ in sources)
    check(not errors, "every packet intact at both ends", f"{errors} broken")
    d = drops(relay.metrics())
    check(not d.get("replayed") and not d.get("auth_failed"),
          "no packet dropped as replayed (or failing authentication) at the relay", d)
    expect_relay_clean(ctx, relay)
    return (f"{' / '.join(map(str, flows))} packets at the phone after each step, SSRC X "
            f"{xs[back[0] - 1][1]} then {xs[back[0]][1]} (marker) at its restart, one receive "
            f"context, drops {d}")


# ---------------------------------------------------------------------------------------------
# 14. deploy/kamailio/kamailio.cfg as an operator runs it: phones registered over TLS, two relays
# in one rtpengine set, per-extension policy from the relays' configuration, and a relay that
# dies mid-run.

FAILOVER_RELAY_CONFIG = """[extensions."alice"]
security = "enforce"

[extensions."plain-desk"]
security = "disabled"
"""

# The deploy file's own routing (registrar, location lookup); the SIP user bob is the relays'
# extension "plain-desk".
FAILOVER_KAMAILIO_LOCAL = """#!define LOCAL_RELAY_EXTENSIONS
route[RELAY_EXTENSIONS] {
	$sht(relayext=>bob) = "plain-desk";
}
"""


def kamailio_slot(call_id, nodes):
    """The rtpengine node Kamailio's module picks for a new call while every node is up
    (select_rtpp_node_new: the sum of the Call-ID's bytes, & 0xff, modulo the weights)."""
    return (sum(call_id.encode()) & 0xFF) % nodes


def registered_over_tls(ua):
    """baresip's log line for its REGISTER's 200 OK, with the transport (Kamailio's own replies
    do not pass its onsend_route, so they are not in its SIP trace)."""
    return "/TLS/v4} 200 OK" in ua.log()


def owner(relays, call_id):
    """(relay, its `query` of the call) for the live relay that has the call, else (None, None)."""
    for r in relays:
        if r.proc.poll() is None:
            q = r.cmd({"command": "query", "call-id": call_id})
            if q.get("result") == "ok" and "totals" in q:
                return r, q
    return None, None


def rtp_packets(q):
    return q.get("totals", {}).get("RTP", {}).get("packets", 0)


def failover_call(ctx, kam, alice, bob, relays, talk=2.0, before_hangup=None):
    """alice dials bob over TLS through Kamailio, they talk for `talk` s, alice hangs up.
    Returns what the call showed: Call-ID, the relay that had it (by `query`), the RTP it had
    counted just before the hang-up, and the WAVs each side decoded."""
    known = {m.call_id for _, _, m in kam.messages()}
    wavs0 = set(alice.decoded_wavs()), set(bob.decoded_wavs())
    alice.command("dial", f"sip:bob@127.0.0.1:{kam.tls_port};transport=tls")
    ok = wait_until("bob's 200 OK to a new INVITE forwarded to alice", lambda: next(
        (m for d, _, m in kam.messages() if d == "out" and m.status == 200
         and m.method == "INVITE" and m.call_id not in known), None), 8)
    cid = ok.call_id
    relay, _ = owner(relays, cid)
    time.sleep(talk)
    extra = before_hangup(relay, cid) if before_hangup else None
    _, q = owner(relays, cid)
    alice.command("hangup")
    wait_until(f"the BYE of {cid} answered through Kamailio", lambda: any(
        d == "out" and m.status == 200 and m.method == "BYE" and m.call_id == cid
        for d, _, m in kam.messages()), 8)
    time.sleep(0.8)  # baresip names its WAVs by the second
    return {"cid": cid, "relay": relay, "rtp": rtp_packets(q) if q else 0, "extra": extra,
            "alice_wav": sorted(set(alice.decoded_wavs()) - wavs0[0]),
            "bob_wav": sorted(set(bob.decoded_wavs()) - wavs0[1])}


def deploy_failover(ctx):
    """deploy/kamailio/kamailio.cfg as it is, with a kamailio-local.cfg naming two relays in one
    rtpengine set: alice (srtp-mand, her relay extension enforce) and bob (plain RTP, the SIP
    user the htable maps to the relay extension "plain-desk", disabled) register over TLS and
    alice calls bob over TLS, call after call. Kamailio spreads the calls over both relays by
    the Call-ID's hash; then the relay that has a running call is killed (SIGKILL, by PID), and
    every new call, those whose hash points at the dead relay included, goes to the survivor
    and carries audio both ways."""
    b = ctx.base
    # Two relays on one address never feed each other: each denies the other's media range and
    # ng and metrics ports (the default deny entries repeated, as a list replaces them).
    def deny_other(lo, hi, base):
        return (FAILOVER_RELAY_CONFIG + "\n[security]\ndeny_peers = [" + ", ".join(f'"{d}"' for d in [
            "0.0.0.0/8", "255.255.255.255", "224.0.0.0/4", "169.254.0.0/16", "::", "ff00::/8",
            "fe80::/10", f"127.0.0.1:{lo}-{hi}", f"127.0.0.1:{base}-{base + 1}"]) + "]\n")
    relays = [ctx.start_relay(config=deny_other(b + 150, b + 199, b + 2), name="relay1",
                              ports=(b + 100, b + 149)),
              ctx.start_relay(base=b + 2, config=deny_other(b + 100, b + 149, b), name="relay2",
                              ports=(b + 150, b + 199))]
    kam = ctx.start_kamailio("deploy", ng_ports=[b, b + 2], local=FAILOVER_KAMAILIO_LOCAL)
    registrar = f"127.0.0.1:{kam.tls_port};transport=tls"
    alice = Baresip(ctx.workdir, "alice", b + 20, b + 40, ctx.tone(440), "srtp-mand",
                    ctrl_port=b + 28, cert=kam.cert, registrar=registrar)
    bob = Baresip(ctx.workdir, "bob", b + 22, b + 60, ctx.tone(660), None, cert=kam.cert,
                  registrar=registrar)
    t0 = time.monotonic()
    for ua in (bob, alice):
        ua.start(ctx.procs, 170)
    for ua in (bob, alice):
        wait_until(f"{ua.name} registered over TLS (Kamailio's 200 OK to its REGISTER)",
                   lambda: registered_over_tls(ua), 10)

    # 1. Calls until both relays have had some (6 at least, 10 at most).
    calls = []
    while len(calls) < 6 or (len({c["relay"].name for c in calls if c["relay"]}) < 2
                             and len(calls) < 10):
        calls.append(failover_call(ctx, kam, alice, bob, relays))
    per_relay = {r.name: [c for c in calls if c["relay"] is r] for r in relays}
    check(all(c["relay"] for c in calls) and all(per_relay.values()),
          "the calls spread over both relays of the set",
          {name: len(cs) for name, cs in per_relay.items()})
    slots = {}
    for c in calls:
        slots.setdefault(kamailio_slot(c["cid"], 2), set()).add(c["relay"].name)
    check(all(len(v) == 1 for v in slots.values()) and len(slots) == 2,
          "each relay to get the calls of one hash slot (Kamailio's Call-ID hash)", slots)
    slot_of = {next(iter(v)): k for k, v in slots.items()}
    t_spread = time.monotonic()

    # 2. During a call, the other relay is killed (SIGKILL, by PID); the call goes on.
    def kill_other(relay, cid):
        other = next(r for r in relays if r is not relay)
        at_kill = rtp_packets(owner([relay], cid)[1])
        os.kill(other.proc.pid, signal.SIGKILL)
        other.proc.wait(timeout=5)
        time.sleep(1.5)
        return other, at_kill
    running = failover_call(ctx, kam, alice, bob, relays, before_hangup=kill_other)
    dead, at_kill = running["extra"]
    survivor = running["relay"]
    check(running["rtp"] >= at_kill + 100,
          f"the call on {survivor.name} going on after {dead.name} was killed (100 more RTP "
          "packets in 1.5 s)", f"{at_kill} at the kill, {running['rtp']} at the hang-up")
    calls.append(running)
    m0 = counter(survivor.metrics(), "srtp_relay_packets_total", direction="out")

    # 3. New calls go to the survivor, at least one whose hash slot is the dead relay's.
    after = []
    while len(after) < 3 or (not any(kamailio_slot(c["cid"], 2) == slot_of[dead.name]
                                     for c in after) and len(after) < 8):
        after.append(failover_call(ctx, kam, alice, bob, relays))
    t_end = time.monotonic()
    check(all(c["relay"] is survivor for c in after),
          f"every call after the kill on the survivor {survivor.name}",
          [(c["cid"], c["relay"].name if c["relay"] else None) for c in after])
    redirected = [c for c in after if kamailio_slot(c["cid"], 2) == slot_of[dead.name]]
    check(redirected, f"a call after the kill whose hash slot was {dead.name}'s (failover, not "
          "luck)", [c["cid"] for c in after])
    dead_url = f"udp:127.0.0.1:{dead.ng_port}"
    m1 = counter(survivor.metrics(), "srtp_relay_packets_total", direction="out")

    # 4. Each call that was not cut: SIP over TLS, each leg's policy from the relays' extension
    # entries, media through its relay, $rtpstat at the BYE, the tones at both ends.
    msgs = kam.messages()
    log = open(kam.proc.logpath, errors="replace").read()
    for c in calls + after:
        call = one_call(msgs, c["cid"])
        invite = must(find(call, "in", method="INVITE"), f"{c['cid']}: alice's INVITE")
        to_bob = must(find(call, "out", method="INVITE"), f"{c['cid']}: the INVITE to bob")
        answer = must(find(call, "out", status=200, method="INVITE"), f"{c['cid']}: the 200 OK")
        check(invite.headers.get("via", "").startswith("SIP/2.0/TLS")
              and to_bob.headers.get("via", "").startswith("SIP/2.0/TLS"),
              f"{c['cid']}: SIP over TLS on both legs (top Via)",
              (invite.headers.get("via"), to_bob.headers.get("via")))
        expect_leg(to_bob.sdp(), f"{c['cid']}: INVITE to bob (relay extension plain-desk: "
                   "disabled)", "RTP/AVP", False, ctx)
        expect_leg(answer.sdp(), f"{c['cid']}: 200 OK to alice (extension alice: enforce)",
                   "RTP/SAVP", True, ctx)
        check(c["rtp"] >= 100, f"{c['cid']}: at least 100 RTP packets counted by "
              f"{c['relay'].name} before the hang-up", c["rtp"])
        stat = re.search(re.escape(f"RTPSTAT {c['cid']} ") + r".*RTP: \d+ bytes, (\d+) packets",
                         log)
        check(stat and int(stat.group(1)) >= 100,
              f"{c['cid']}: Kamailio's $rtpstat at the BYE with at least 100 RTP packets",
              stat.group(0) if stat else "no RTPSTAT line")
        check(len(c["alice_wav"]) == 1 and len(c["bob_wav"]) == 1,
              f"{c['cid']}: one decoded WAV per side", (c["alice_wav"], c["bob_wav"]))
        expect_tone(c["bob_wav"][0], 440, 1.0, f"bob ({c['cid']}, {c['relay'].name})")
        expect_tone(c["alice_wav"][0], 660, 1.0, f"alice ({c['cid']}, {c['relay'].name})")
    check(m1 - m0 >= 200 * len(after),
          f"the survivor {survivor.name} forwarding the new calls' media (>= 200 packets a call)",
          m1 - m0)
    # The first new call that hashed to the dead relay: its offer went there, got no answer,
    # and went to the survivor within the same rtpengine_manage().
    failed = [line for line in log.splitlines()
              if f'can\'t send command "offer" to RTPEngine <{dead_url}>' in line]
    check(len(failed) == 1, f"Kamailio to try one offer on the dead {dead.name} ({dead_url}) "
          "and to leave it disabled afterwards", failed or "no such error line")
    return (f"{len(per_relay['relay1'])}+{len(per_relay['relay2'])} calls over TLS spread over "
            f"relay1+relay2 by Call-ID hash ({t_spread - t0:.1f} s); {dead.name} killed "
            f"(SIGKILL) during a call on {survivor.name}, which went on; {len(after)} new calls "
            f"({len(redirected)} hashed to the dead relay, its first offer re-sent to the "
            f"survivor) all on {survivor.name}, tones both ways ({t_end - t_spread:.1f} s); "
            "alice's leg SRTP (extension alice: enforce), bob's plain (htable: plain-desk); "
            "$rtpstat at every BYE")


# ---------------------------------------------------------------------------------------------
# 15. Two relay interfaces, one per side of the network: deploy/kamailio/kamailio.cfg with
# WITH_RELAY_INTERFACES names each leg's interface (ng `direction`) from its address.

# The "internal" network is 127.0.0.1 (alice, Kamailio, the relay's internal address); anything
# else (bob on 127.0.0.3) is "external". Two subnets, as a site lists them (the first matches
# nothing here). The deploy file's own routing: both register over UDP, and a call goes to the
# callee's registered contact.
INTERFACES_KAMAILIO_LOCAL = """#!define WITH_RELAY_INTERFACES
#!define INTERNAL_NET "192.168.0.0/16,127.0.0.1/32"
"""
SIDE_ADDR = {"internal": "127.0.0.1", "external": "127.0.0.2"}


def registered_over_udp(ua):
    """baresip's log line for its REGISTER's 200 OK over UDP (Kamailio's own replies do not
    pass its onsend_route, so they are not in its SIP trace)."""
    return "/UDP/v4} 200 OK" in ua.log()


def interface_call(ctx, kam, relay, caller, callee, talk=2.5):
    """`caller` dials `callee` (by its AOR: Kamailio looks up its contact), they talk for
    `talk` s, the caller hangs up. Returns the Call-ID, the relay's counters before the call
    and just before the hang-up, a `query` taken during the call, and each side's new WAV."""
    known = {m.call_id for _, _, m in kam.messages()}
    wavs0 = set(caller.decoded_wavs()), set(callee.decoded_wavs())
    m0 = relay.metrics()
    caller.command("dial", f"sip:{callee.name}@127.0.0.1:{kam.port}")
    ok = wait_until(f"{callee.name}'s 200 OK to {caller.name}'s INVITE forwarded", lambda: next(
        (m for d, _, m in kam.messages() if d == "out" and m.status == 200
         and m.method == "INVITE" and m.call_id not in known), None), 8)
    time.sleep(talk)
    q = relay.cmd({"command": "query", "call-id": ok.call_id})
    m1 = relay.metrics()
    caller.command("hangup")
    wait_until(f"the BYE of {ok.call_id} answered through Kamailio", lambda: any(
        d == "out" and m.status == 200 and m.method == "BYE" and m.call_id == ok.call_id
        for d, _, m in kam.messages()), 8)
    time.sleep(0.8)  # baresip names its WAVs by the second
    return {"cid": ok.call_id, "m0": m0, "m1": m1, "query": q,
            "caller_wav": sorted(set(caller.decoded_wavs()) - wavs0[0]),
            "callee_wav": sorted(set(callee.decoded_wavs()) - wavs0[1])}


def connection_addr(sdp):
    m = re.search(r"^c=IN IP4 (\S+)", sdp.text, re.M)
    return m.group(1) if m else None


def kamailio_direction(ctx):
    """One relay with two interfaces (internal 127.0.0.1, external 127.0.0.2) behind
    deploy/kamailio/kamailio.cfg with WITH_RELAY_INTERFACES and 127.0.0.1/32 in INTERNAL_NET.
    alice (baresip on 127.0.0.1) and bob (baresip on 127.0.0.3) register over UDP; alice calls
    bob, then bob calls alice. Kamailio's offer names the caller's side first (from the
    INVITE's source) and the callee's second (from its registered contact), so each UA gets
    the relay's address of its own side in SDP, and media crosses from one interface to the
    other."""
    b = ctx.base
    relay = ctx.start_relay(system="disabled", args=(
        "--interface", f"internal/{SIDE_ADDR['internal']}",
        "--interface", f"external/{SIDE_ADDR['external']}"))
    kam = ctx.start_kamailio("deploy", local=INTERFACES_KAMAILIO_LOCAL)
    registrar = f"127.0.0.1:{kam.port}"
    alice = Baresip(ctx.workdir, "alice", b + 20, b + 40, ctx.tone(440), ctrl_port=b + 28,
                    registrar=registrar)
    bob = Baresip(ctx.workdir, "bob", b + 22, b + 60, ctx.tone(660), ctrl_port=b + 29,
                  registrar=registrar, addr="127.0.0.3")
    side = {"alice": "internal", "bob": "external"}
    for ua in (alice, bob):
        ua.start(ctx.procs, 40)
    for ua in (alice, bob):
        wait_until(f"{ua.name} registered over UDP (Kamailio's 200 OK to its REGISTER)",
                   lambda: registered_over_udp(ua), 10)
    notes = []
    for caller, callee in ((alice, bob), (bob, alice)):
        c = interface_call(ctx, kam, relay, caller, callee)
        who = f"{caller.name} ({side[caller.name]}) calls {callee.name} ({side[callee.name]})"
        call = one_call(kam.messages(), c["cid"])
        own = must(find(call, "in", method="INVITE"), f"{who}: {caller.name}'s INVITE").sdp()
        check(connection_addr(own) == caller.addr, f"{who}: {caller.name}'s own SDP naming "
              f"its address {caller.addr}", connection_addr(own))
        got = {
            callee.name: must(find(call, "out", dst=f"{callee.addr}:{callee.sip_port}",
                                   method="INVITE"), f"{who}: the INVITE to {callee.name}").sdp(),
            caller.name: must(find(call, "out", dst=f"{caller.addr}:{caller.sip_port}",
                                   status=200, method="INVITE"),
                              f"{who}: the 200 OK to {caller.name}").sdp(),
        }
        for name, sdp in got.items():
            want = SIDE_ADDR[side[name]]
            lo = ctx.base + 100
            check(connection_addr(sdp) == want and f"IN IP4 {want}" in sdp.text.split("\n", 2)[1]
                  and lo <= sdp.media[0]["port"] < lo + 100,
                  f"{who}: the SDP {name} received naming the relay's {side[name]} address "
                  f"{want} (c= and o=) and a relay port", sdp.text)
        parties = {p.get("interface"): p for p in c["query"].get("tags", {}).values()}
        check({k: p.get("local address") for k, p in parties.items()}
              == {"internal": SIDE_ADDR["internal"], "external": SIDE_ADDR["external"]},
              f"{who}: the relay's query naming one party on each interface with its address",
              {t: (p.get("interface"), p.get("local address"))
               for t, p in c["query"].get("tags", {}).items()})
        grown = {(i, d): counter(c["m1"], "srtp_relay_packets_total", interface=i, direction=d)
                 - counter(c["m0"], "srtp_relay_packets_total", interface=i, direction=d)
                 for i in ("internal", "external") for d in ("in", "out")}
        check(min(grown.values()) >= 50,
              f"{who}: srtp_relay_packets_total growing on both interfaces, in and out (>= 50 "
              "packets each during the call)", grown)
        check(len(c["caller_wav"]) == 1 and len(c["callee_wav"]) == 1,
              f"{who}: one decoded WAV per side", (c["caller_wav"], c["callee_wav"]))
        freq = {"alice": 440, "bob": 660}
        heard = [expect_tone(c[f"{ua}_wav"][0], freq[other.name], 1.0, f"{who}: {me.name}")[0]
                 for ua, me, other in (("callee", callee, caller), ("caller", caller, callee))]
        notes.append(f"{caller.name}->{callee.name}: {caller.name} got "
                     f"{connection_addr(got[caller.name])}, {callee.name} "
                     f"{connection_addr(got[callee.name])}, internal "
                     f"+{int(grown['internal', 'out'])}/external "
                     f"+{int(grown['external', 'out'])} packets out, tone {min(heard):.1f} s+")
    log = open(relay.proc.logpath).read()
    errors = [line for line in log.splitlines() if 'result="error"' in line]
    check(not errors, "no ng command to fail", errors[:3])
    return "; ".join(notes)


# ---------------------------------------------------------------------------------------------
# 16. Call quality from real RTCP: GStreamer rtpbin endpoints, one of which loses packets on
# purpose; the receiver's reports reach the relay, and `delete` reports the loss per SSRC.

# Every 20th RTP packet from A is dropped before it leaves (5 %). The relay reads B's reports
# about A: `packet loss` is each report's fraction lost in whole percent, truncated (12/256 =
# 4.7 % reads 4, as rtpengine does), averaged with truncation, and the first report may come
# before the first drop, so exactly 5 % loss reads 3 or 4. Tolerance: 5 % +- 3 (2 to 8).
LOSS_EVERY, LOSS_PCT, LOSS_TOLERANCE = 20, 5, 3


def gstreamer_rtcp_loss(ctx):
    """A call of two GStreamer rtpbin endpoints (plain RTP/AVP, RTCP on port + 1, a report
    about every second), ng driven directly. A (440 Hz) drops every 20th packet it sends; B
    (660 Hz) drops none. After 10 s, `delete`: the call's SSRC entry for A's SSRC (what B's
    reports say about A) shows the loss, the one for B's shows none and a higher MOS; the
    relay's loss-ratio histogram counted the report blocks."""
    relay = ctx.start_relay(system="disabled")
    b = ctx.base
    call, seconds = "gst-rtcp-loss", 10
    pa, pb = b + 20, b + 24
    ssrc_a, ssrc_b = 0x1055A000, 0xC1EAB000
    r = relay.cmd({"command": "offer", "call-id": call, "from-tag": "a",
                   "sdp": plain_sdp(pa, "RTP/AVP")})
    check(r.get("result") == "ok", "the offer accepted", r)
    offer_b = Sdp(r["sdp"])
    r = relay.cmd({"command": "answer", "call-id": call, "from-tag": "a", "to-tag": "b",
                   "sdp": plain_sdp(pb, "RTP/AVP")})
    check(r.get("result") == "ok", "the answer accepted", r)
    ans_a = Sdp(r["sdp"])
    for who, sdp in (("offer to B", offer_b), ("answer to A", ans_a)):
        check(sdp.media[0]["proto"] == "RTP/AVP" and not sdp.crypto(0),
              f"{who}: plain RTP/AVP", sdp.summary())
    m0 = relay.metrics()
    wav_a, wav_b = (os.path.join(ctx.workdir, f"gst-{x}.wav") for x in "ab")
    peers = [gst_rtcp_peer(ctx.procs, "gst-a", pa, ans_a.media[0]["port"], ssrc_a, 440, seconds,
                           wav_a, drop_every=LOSS_EVERY),
             gst_rtcp_peer(ctx.procs, "gst-b", pb, offer_b.media[0]["port"], ssrc_b, 660, seconds,
                           wav_b)]
    for p in peers:
        rc = ctx.procs.wait(p, seconds + 10)
        check(rc == 0, f"{p.name} to exit 0", f"{rc}: {open(p.logpath).read()[-500:]}")
    sent = re.search(r"sent (\d+) dropped (\d+)", open(peers[0].logpath).read())
    check(sent and int(sent.group(2)) > 0, "A to report the packets it dropped",
          open(peers[0].logpath).read()[-300:])
    dropped = int(sent.group(2))
    d = relay.cmd({"command": "delete", "call-id": call})
    check(d.get("result") == "ok", "the delete answered ok", d)
    ssrcs = d.get("SSRC", {})
    lossy, clean = ssrcs.get(str(ssrc_a)), ssrcs.get(str(ssrc_b))
    check(lossy and clean, f"the delete's SSRC dictionary to have A's ({ssrc_a}) and B's "
          f"({ssrc_b}) entries", list(ssrcs))
    avg_l, avg_c = lossy["average MOS"], clean["average MOS"]
    check(avg_l.get("samples", 0) >= 5 and avg_c.get("samples", 0) >= 5,
          "at least 5 reports about each direction (rtpbin reports about every second)",
          (avg_l, avg_c))
    check(abs(avg_l["packet loss"] - LOSS_PCT) <= LOSS_TOLERANCE,
          f"A's average packet loss within {LOSS_PCT} % +- {LOSS_TOLERANCE} (every "
          f"{LOSS_EVERY}th packet dropped)", avg_l)
    check(avg_c["packet loss"] == 0, "B's average packet loss 0 (nothing dropped)", avg_c)
    check(avg_l["MOS"] < avg_c["MOS"], "A's average MOS below B's", (avg_l["MOS"], avg_c["MOS"]))
    check(dropped // 2 <= lossy["cumulative loss"] <= dropped,
          f"A's cumulative loss in B's last report between half and all of the {dropped} "
          "dropped (the last report may come before the last drops)", lossy["cumulative loss"])
    receiver = [m for p in d.get("tags", {}).values() if p.get("tag") == "b"
                for m in p.get("medias", [])]
    check(receiver and receiver[0].get("quality", {}).get("reported SSRC") == ssrc_a,
          "B's media to carry the quality of what it receives, about A's SSRC",
          receiver[0].get("quality") if receiver else d.get("tags"))
    m1 = relay.metrics()
    count = (counter(m1, "srtp_relay_rtcp_loss_ratio_count")
             - counter(m0, "srtp_relay_rtcp_loss_ratio_count"))
    total = (counter(m1, "srtp_relay_rtcp_loss_ratio_sum")
             - counter(m0, "srtp_relay_rtcp_loss_ratio_sum"))
    check(count >= avg_l["samples"] + avg_c["samples"],
          "srtp_relay_rtcp_loss_ratio_count grown by every report block read "
          f"({avg_l['samples']} + {avg_c['samples']})", count)
    # The histogram's sum is exact (ppm, not whole percent); B's reports add A's loss, A's add 0.
    mean = 100 * total / avg_l["samples"]
    check(abs(mean - LOSS_PCT) <= LOSS_TOLERANCE,
          f"srtp_relay_rtcp_loss_ratio_sum over B's reports: {LOSS_PCT} % +- {LOSS_TOLERANCE}",
          f"{mean:.2f} %")
    expect_tone(wav_b, 440, 3.0, "B (what A sent, with its losses)")
    expect_tone(wav_a, 660, 3.0, "A")
    return (f"A dropped {dropped} of {int(sent.group(1)) + dropped}: SSRC {ssrc_a} packet loss "
            f"{avg_l['packet loss']} % average ({mean:.1f} % in the histogram), MOS "
            f"{avg_l['MOS'] / 10} over {avg_l['samples']} reports, cumulative "
            f"{lossy['cumulative loss']}; clean SSRC {ssrc_b}: {avg_c['packet loss']} %, MOS "
            f"{avg_c['MOS'] / 10}; loss-ratio histogram +{int(count)}")


# ---------------------------------------------------------------------------------------------
# 17. deploy/kamailio/kamailio.cfg fails closed: an SDP the relay refuses never reaches the other
# side, neither in a request nor in a reply, and the call does not go on without the relay.


def deploy_refused_media(ctx):
    """deploy/kamailio/kamailio.cfg with the relay configuration of sipp-real-phone-offers
    (system best-effort, extension "enforced" under enforce). 1. A plain offer from the SIP user
    "enforced" (no htable entry: the user name is its relay extension): the relay refuses it,
    the caller gets 488 and the callee no INVITE. 2. An SRTP offer to a callee under enforce who
    answers plain RTP: the relay refuses the answer; the caller's 200 OK comes without SDP, the
    caller's ACK reaches the callee without SDP, Kamailio then sends BYE to both, and the relay
    keeps no call. Neither side ever gets an SDP naming the other's media port."""
    relay = ctx.start_relay(config=RELAY_CONFIG)
    kam = ctx.start_kamailio("deploy")
    b = ctx.base
    ctx.free0 = relay.cmd({"command": "statistics"})["free-port-pairs"]
    uas_port = b + 24

    # 1. The offer refused: 488, nothing to the callee.
    msgs, _ = sipp_case(ctx, kam, "offer-488", "enforced", f"besteffort-{uas_port}-uas",
                        PLAIN_OFFER, None, 488, b + 20, uas_port)
    check(not find(msgs, "out", dst=f"127.0.0.1:{uas_port}", method="INVITE", with_sdp=False),
          "offer-488: no INVITE to the callee", "one was forwarded")
    # tm's own 488 does not pass Kamailio's onsend_route; SIPp's trace shows it.
    trace = open(os.path.join(ctx.workdir, "offer-488", "offer-488-uac-msgs.log")).read()
    check("SIP/2.0 488 Not Acceptable Here" in trace, "offer-488: the caller to receive 488",
          [line for line in trace.splitlines() if line.startswith("SIP/2.0")])
    log = open(relay.proc.logpath).read()
    want = "media security enforce: m-line 0 (audio): offer has no usable SRTP"
    check(want in log, f"offer-488: the relay's reason '{want}' (the caller's extension "
          "\"enforced\", its SIP user name)", [line for line in log.splitlines()
                                               if 'result="error"' in line])

    # 2. The answer refused: no SDP to the caller, BYE to both at the ACK.
    caller, callee, at_uac, at_uas = sipp_dialog(
        ctx, kam, "answer-refused", "enforce",
        [caller_invite(sdp_audio("caller", b + 40, KEY_A)), sipp_recv("180", optional=True),
         sipp_recv("200", keep=("To", "callee")), in_dialog("ACK", 1, "caller"),
         sipp_recv("BYE"), reply("200 OK", "caller")],
        [CALLEE_INVITED, reply("200 OK", "callee", sdp_audio("callee", b + 42), first=True),
         sipp_recv("ACK"), sipp_recv("BYE"), reply("200 OK", "callee")], n=1)
    sipp_done(ctx, "answer-refused", caller, callee)
    msgs = one_call(kam.messages(), must(find(kam.messages(), "out", dst=at_uas, method="INVITE"),
                                         "answer-refused: the INVITE to the callee").call_id)
    offer = find(msgs, "out", dst=at_uas, method="INVITE").sdp()
    check(offer.media[0]["proto"] == "RTP/SAVP" and KEY_A not in offer.text
          and offer.media[0]["port"] != b + 40,
          "answer-refused: the callee offered the relay's SRTP (its port and key)", offer.summary())
    ok = must(find(msgs, "out", dst=at_uac, status=200, method="INVITE", with_sdp=False),
              "answer-refused: the 200 OK forwarded to the caller")
    check(not ok.sdp() and not ok.body.strip(), "answer-refused: the caller's 200 OK without SDP",
          ok.body)
    ack = must(find(msgs, "out", dst=at_uas, method="ACK", with_sdp=False),
               "answer-refused: the caller's ACK forwarded to the callee")
    check(not ack.sdp(), "answer-refused: the ACK to the callee without SDP", ack.body)
    leaked = [(d, dst, m.first) for d, dst, m in msgs if d == "out" and m.sdp()
              and ((dst == at_uac and f"m=audio {b + 42} " in m.body)
                   or (dst == at_uas and f"m=audio {b + 40} " in m.body))]
    check(not leaked, "answer-refused: no SDP naming one side's own media port sent to the other",
          leaked)
    log = open(relay.proc.logpath).read()
    want = "media security enforce: m-line 0 (audio): answer has no usable SRTP"
    check(want in log, f"answer-refused: the relay's reason '{want}'",
          [line for line in log.splitlines() if 'result="error"' in line])
    wait_until("no call left at the relay", lambda: relay.cmd({"command": "list"}).get("calls") == [], 5)
    wait_until("every port pair to be back in the pool",
               lambda: relay.cmd({"command": "statistics"})["free-port-pairs"] == ctx.free0, 5)
    return ("a refused offer became 488 with nothing to the callee; a refused answer reached "
            "the caller without SDP, and the dialog ended with BYE to both at the ACK")


ALL = [
    Scenario("kamailio-baresip-srtp", kamailio_baresip, 40),
    Scenario("baresip-srtp-to-plain", baresip_srtp_plain, 40),
    Scenario("linphone-capneg", linphone_capneg, 60),
    Scenario("linphone-rekey-every-reinvite", linphone_rekey, 60),
    Scenario("gstreamer-srtp-both-suites", gstreamer_srtp, 40),
    Scenario("sipp-real-phone-offers", sipp_offers, 60),
    Scenario("manage-forking-early-media", manage_forking, 40),
    Scenario("sipp-early-media-183-200", sipp_early_media, 40),
    Scenario("sipp-ringing-past-media-timeout", sipp_long_ringing, 40),
    Scenario("sipp-t38-reinvite", sipp_t38, 30),
    Scenario("sipp-delayed-offer", sipp_delayed_offer, 30),
    Scenario("sipp-pcap-replay-to-srtp", sipp_pcap_twice, 40),
    Scenario("sipp-transfer-to-srtp", sipp_transfer, 30),
    Scenario("deploy-kamailio-relay-failover", deploy_failover, 150),
    Scenario("kamailio-direction-internal-external", kamailio_direction, 60),
    Scenario("gstreamer-rtcp-loss-in-delete", gstreamer_rtcp_loss, 40),
    Scenario("deploy-kamailio-refused-media", deploy_refused_media, 40),
]
