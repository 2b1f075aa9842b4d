"""Each suite of RFC 7714 and RFC 6188 with real SIP phones through the lab Kamailio."""
import os

from harness import check, expect_tone
from peers import Baresip, Linphone

from .common import ALL_SUITES, drops, expect_leg, find, must, one_call
from .linphone import linphone_call


# Callees named after their suite; each has an extension whose device profile allows only it.
GCM_CALLEES = {"gcmone": "AEAD_AES_128_GCM", "gcmtwo": "AEAD_AES_256_GCM"}
# Callers offering only one suite (linphone: baresip 1.0 refuses 46-byte AES-256-CM keys).
CM256_CALLERS = {"lpeighty": "AES_256_CM_HMAC_SHA1_80", "lpthirtytwo": "AES_256_CM_HMAC_SHA1_32"}


def kamailio_each_new_suite(ctx):
    """Each new suite with real SIP phones through Kamailio, every call under enforce with tones
    both ways. GCM: two baresip callees at once, each with an extension (the lab Kamailio passes
    the R-URI's user as to-extension) whose device profile allows only its suite, so the relay
    offers only that and baresip answers with it. AES-256-CM: baresip 1.0 refuses its 46-byte
    keys, so linphone calls, offering only that suite, and the relay answers with it."""
    config = ("[security]\nsuites = [" + ", ".join(f'"{s}"' for s in ALL_SUITES) + "]\n"
              + "".join(f'[profiles.only-{name}]\nsuites = ["{suite}"]\n'
                        f'[extensions."{name}"]\nsecurity = "enforce"\nprofile = "only-{name}"\n'
                        for name, suite in GCM_CALLEES.items()))
    relay = ctx.start_relay(config=config)
    kam = ctx.start_kamailio()
    b = ctx.base
    seen = []
    pairs = []
    for n, callee in enumerate(GCM_CALLEES):
        # SIP on even ports: baresip also binds TLS on the next one.
        alice_port, bob_port = b + 20 + 4 * n, b + 22 + 4 * n
        alice = Baresip(ctx.workdir, f"alice{n}", alice_port, b + 40 + 20 * n, ctx.tone(440),
                        "srtp-mand")
        bob = Baresip(ctx.workdir, callee, bob_port, b + 50 + 20 * n, ctx.tone(660), "srtp-mand")
        bob.start(ctx.procs, 9)
        pairs.append((alice, bob, callee, bob_port, alice_port))
    for alice, bob, callee, bob_port, alice_port in pairs:
        bob.wait_bound()
        alice.start(ctx.procs, 6, dial=f"sip:ext-{bob_port}-{callee}@127.0.0.1:{kam.port}")
    for alice, bob, *_ in pairs:
        ctx.procs.wait(alice.proc, 15)
        ctx.procs.wait(bob.proc, 10)
    msgs = kam.messages()
    for alice, bob, callee, bob_port, alice_port in pairs:
        suite = GCM_CALLEES[callee]
        invite = must(find(msgs, "out", dst=f"127.0.0.1:{bob_port}", method="INVITE"),
                      f"Kamailio to forward alice's INVITE to {callee}")
        call = one_call(msgs, invite.call_id)
        offered = [c[1] for c in invite.sdp().crypto(0)]
        check(offered == [suite], f"the relay offers {callee} only {suite}", offered)
        answer = must(find(call, "in", status=200, method="INVITE"), f"{callee}'s 200 OK")
        answered = [c[1] for c in answer.sdp().crypto(0)]
        check(answered == [suite], f"{callee} (baresip) answers with {suite}", answered)
        to_alice = must(find(call, "out", dst=f"127.0.0.1:{alice_port}", status=200, method="INVITE"),
                        f"the 200 OK to alice for {callee}")
        expect_leg(to_alice.sdp(), f"200 OK to alice ({callee})", "RTP/SAVP", True, ctx)
        expect_tone(bob.decoded_wav(), 440, 3.0, f"{callee} ({suite})")
        expect_tone(alice.decoded_wav(), 660, 3.0, f"alice calling {callee}")
        seen.append(f"{suite} (baresip answering)")

    bob = Baresip(ctx.workdir, "bob", b + 22, b + 40, ctx.tone(660), "srtp-mand")
    bob.start(ctx.procs, 25)
    bob.wait_bound()
    for n, (name, suite) in enumerate(CM256_CALLERS.items()):
        lp = Linphone(ctx.workdir, name, b + 30 + 4 * n, b + 80 + 10 * n, suites=suite)
        lp.start(ctx.procs)
        rec = os.path.join(ctx.workdir, f"{name}.wav")
        before = len(kam.messages())
        linphone_call(lp, f"sip:enforce-{bob.sip_port}-bob@127.0.0.1:{kam.port}", ctx.tone(440), rec, 3)
        lp.quit(ctx.procs)
        msgs = kam.messages()[before:]
        offer = must(find(msgs, "in", method="INVITE"), f"{name}'s INVITE").sdp()
        offered = {s for _, s, _ in offer.crypto(0) + offer.acap_crypto(0)}
        check(offered == {suite}, f"{name} (linphone) offers only {suite}", offered)
        answer = must(find(msgs, "out", dst=f"127.0.0.1:{lp.sip_port}", status=200, method="INVITE"),
                      f"the 200 OK to {name}").sdp()
        got = [c[1] for c in answer.crypto(0)]
        check(got == [suite], f"the relay answers {name} with {suite}", answer.summary())
        expect_tone(rec, 660, 1.5, f"{name} ({suite})")
        seen.append(f"{suite} (linphone offering)")
    expect_tone(bob.decoded_wav(), 440, 1.5, "bob, called by linphone")
    d = drops(relay.metrics())
    check(d.get("replayed", 0) == 0, "no replay", d)
    return "; ".join(seen) + ": tones both ways through Kamailio"
