"""Two relay interfaces, one per side of the network, named by deploy/kamailio/kamailio.cfg
(WITH_RELAY_INTERFACES) for each leg from its address."""
import re
import time

from harness import check, counter, expect_tone, wait_until
from peers import Baresip

from .common import find, must, one_call


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
