"""deploy/kamailio/kamailio.cfg as an operator runs it: phones registered over TLS with two relays
in one rtpengine set and a relay killed mid-run, and the file failing closed when the relay
refuses an offer or an answer."""
import os
import re
import signal
import time

from harness import check, counter, expect_tone, wait_until
from peers import Baresip

from .common import (CALLEE_INVITED, KEY_A, PLAIN_OFFER, RELAY_CONFIG, caller_invite, expect_leg,
                     find, in_dialog, must, one_call, reply, sdp_audio, sipp_case, sipp_dialog,
                     sipp_done, sipp_recv)


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
\t$sht(relayext=>bob) = "plain-desk";
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
