"""Linphone through the lab Kamailio: RFC 5939 capability negotiation both ways, and a new key in
every re-INVITE."""
import os
import time

from harness import MetricsPoller, check, counter, expect_tone
from peers import Baresip, Linphone

from .common import capneg_leaks, drops, expect_leg, find, must


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
