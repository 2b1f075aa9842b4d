"""Stream continuity towards an SRTP phone (docs/behaviour.md §3b): a capture replayed twice
under one SSRC, and a transfer to a new source and back."""
import struct
import time

from harness import Fail, check, counter
from media import Endpoint, Phone

from .common import (CALLEE_BYE, CALLEE_INVITED, KEY_B, SUITE, caller_invite, drops, expect_leg,
                     expect_relay_clean, in_dialog, relay_crypto, reply, sdp_audio, sipp_dialog,
                     sipp_done, sipp_pause, sipp_recv, wait_sip)


# ---------------------------------------------------------------------------------------------
# 12-13. Stream continuity towards an SRTP phone (docs/behaviour.md §3b): whatever the source
# behind the relay does (a capture replayed under the same SSRC, a transfer to a new source, the
# first source coming back), the phone's one libsrtp receive context takes every packet.


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
