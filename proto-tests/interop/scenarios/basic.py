"""Two baresip UAs call each other through the lab Kamailio (proto-tests/interop/kamailio.cfg)
and the relay: SRTP on both legs, then SRTP to plain RTP."""
from harness import check, counter, expect_tone
from peers import Baresip

from .common import ALL_SUITES, drops, expect_leg, expect_relay_clean, find, must, one_call


# ---------------------------------------------------------------------------------------------
# 1 and 2. Two baresip UAs call each other through Kamailio and the relay


def baresip_call(ctx, alice_enc, bob_enc, policy, config=None):
    """alice (440 Hz) calls bob (660 Hz) through Kamailio with bob's leg under `policy`; a call
    of about 5 s. Returns the relay, the SIP messages of the call, and both UAs."""
    relay = ctx.start_relay(config=config)
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


def kamailio_baresip_new_suites(ctx):
    """SRTP on both legs with the relay preferring the suites of RFC 7714 and RFC 6188: the
    relay offers bob every suite, GCM first, and bob (baresip's srtp module, libre) takes one of
    the new ones; alice's leg keeps the suite alice offered first. Each leg on its own suite,
    tone both ways."""
    config = "[security]\nsuites = [" + ", ".join(f'"{s}"' for s in ALL_SUITES) + "]\n"
    relay, sdp, alice, bob = baresip_call(ctx, "srtp-mand", "srtp-mand", "enforce", config)
    expect_leg(sdp["offer to bob"], "INVITE to bob", "RTP/SAVP", True, ctx)
    offered = [c[1] for c in sdp["offer to bob"].crypto(0)]
    check(offered == ALL_SUITES, "the relay offers bob all six suites in the configured order",
          offered)
    bob_suite = [c[1] for c in sdp["bob's answer"].crypto(0)]
    check(len(bob_suite) == 1 and bob_suite[0] in ALL_SUITES[:4],
          "bob to answer with one of the new suites (GCM or AES-256)", bob_suite)
    alice_first = [c[1] for c in sdp["alice's offer"].crypto(0) if c[1] in ALL_SUITES][0]
    to_alice = [c[1] for c in sdp["answer to alice"].crypto(0)]
    check(to_alice == [alice_first], f"the answer to alice in the suite she offered first ({alice_first})",
          to_alice)
    expect_tone(bob.decoded_wav(), 440, 3.0, "bob")
    expect_tone(alice.decoded_wav(), 660, 3.0, "alice")
    expect_relay_clean(ctx, relay)
    m = relay.metrics()
    fwd = counter(m, "srtp_relay_packets_total", direction="out", transform="decrypt+encrypt")
    check(fwd >= 300, "at least 300 SRTP packets re-encrypted by the relay", fwd)
    d = drops(m)
    check(d.get("auth_failed", 0) <= 2 and d.get("replayed", 0) == 0,
          "at most the 2 plain RTCP BYEs at hang-up refused, no replay", d)
    return f"alice {to_alice[0]}, bob {bob_suite[0]}, {int(fwd)} packets decrypt+encrypt, tone both ways"


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
