"""SIP dialogs through the operator's Kamailio config (deploy/kamailio/kamailio.cfg) with the lab
routing: forking, early media, long ringing, T.38 and a delayed offer."""
import time

from harness import check, counter, expect_tone, wait_until
from media import Endpoint
from peers import Baresip

from .common import (CALLEE_BYE, CALLEE_INVITED, KEY_A, KEY_B, KEY_C, SUITE, caller_answered,
                     caller_invite, drops, expect_leg, expect_relay_clean, find, in_dialog, must,
                     one_call, relay_crypto, reply, sdp_audio, sipp_dialog, sipp_done, sipp_pause,
                     sipp_recv, wait_sip)


# ---------------------------------------------------------------------------------------------
# 7-11. The operator's Kamailio config, deploy/kamailio/kamailio.cfg, as it is (laid out like
# Kamailio's shipped default config: rtpengine_manage() in branch_route, onreply_route,
# failure_route and for the ACK and BYE), with the lab routing of kamailio-lab.cfg: forking, early
# media, long ringing, T.38, delayed offer (12-13, stream continuity, are in continuity.py).


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


def sdp_t38(who, port, version):
    """A fax gateway's T.38 SDP: the audio m-line becomes image/udptl."""
    return "\n".join([
        "v=0", f"o={who} 1000 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
        f"m=image {port} udptl t38", "a=T38FaxVersion:0", "a=T38MaxBitRate:14400",
        "a=T38FaxRateManagement:transferredTCF", "a=T38FaxMaxBuffer:262",
        "a=T38FaxMaxDatagram:176", "a=T38FaxUdpEC:t38UDPRedundancy"])


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
