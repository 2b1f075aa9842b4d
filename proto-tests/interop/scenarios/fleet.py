"""A fleet: two hosts, each holding one HA identity and standing by for the other's, behind one
Kamailio rtpengine set. The hosts are network namespaces on a lab bridge (10.77.0.0/24); the
runner's own namespace is on the bridge too and holds Kamailio, the phones and the Redis store.
Host 1 is killed whole and its identity's calls go on from host 2; a drain of one identity (in
Kamailio and in the relay) sends new calls to the other while its own calls' re-INVITEs still
reach it.

    lab bridge (namespace srtp-fleet-lan)
     |- root namespace  10.77.0.100   Kamailio, baresip phones, redis-server (TCP, this address)
     |- srtp-fleet-h1   10.77.0.1     host1: identity r1 (10.77.0.11, holds it), standby of r2
     '- srtp-fleet-h2   10.77.0.2     host2: identity r2 (10.77.0.12, holds it), standby of r1

Every address is in that private test range or loopback; the scenario removes the namespaces
and links it made (also those a failed run left behind) whatever the outcome."""
import os
import re
import signal
import subprocess
import time

from harness import Fail, Kamailio, MetricsPoller, Relay, check, counter, expect_tone, wait_until
from peers import Baresip

from .common import find, must, one_call
from .deploy import kamailio_slot
from .ha import Redis, decrypt_errors, forwarded, split_wav, write_kek

PROXY = "10.77.0.100"
HOSTS = {"host1": "10.77.0.1", "host2": "10.77.0.2"}
IDENTITIES = {"r1": "10.77.0.11", "r2": "10.77.0.12"}
NG_PORT = 2223
LEASE_S = 1.0
TALK_BEFORE_S = 3.0
TALK_AFTER_S = 5.0

FLEET_CONFIG = """[control]
allow = ["{proxy}/32", "127.0.0.0/8"]

[ha]
store = "redis://{proxy}:{redis_port}/0"
identity = "{identity}"
kek_file = "{kek}"
lease_ms = {lease_ms}
"""


def ip(*args, check_rc=True):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if check_rc and r.returncode != 0:
        raise Fail(f"`ip {' '.join(args)}` to succeed; got exit {r.returncode}: {r.stderr.strip()}")
    return r.stdout


class Lab:
    """The namespaces and links: a bridge in namespace srtp-fleet-lan, one namespace per host
    with a veth to the bridge, and a veth from the runner's namespace (10.77.0.100)."""

    NS = {"lan": "srtp-fleet-lan", "host1": "srtp-fleet-h1", "host2": "srtp-fleet-h2"}
    DEV = {"root": "srfl-root", "host1": "srfl-h1", "host2": "srfl-h2"}

    def build(self):
        self.remove()
        taken = ip("-4", "-o", "addr", "show", "to", "10.77.0.0/24").strip()
        check(not taken, "no address of 10.77.0.0/24 on this host before the lab", taken)
        for ns in self.NS.values():
            ip("netns", "add", ns)
        lan = self.NS["lan"]
        ip("-n", lan, "link", "add", "br0", "type", "bridge")
        ip("-n", lan, "link", "set", "br0", "up")
        for role, addr in (("root", PROXY), ("host1", HOSTS["host1"]), ("host2", HOSTS["host2"])):
            dev, peer = self.DEV[role], self.DEV[role] + "b"
            ip("link", "add", dev, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", lan)
            ip("-n", lan, "link", "set", peer, "master", "br0")
            ip("-n", lan, "link", "set", peer, "up")
            if role == "root":
                ip("addr", "add", f"{addr}/24", "dev", dev)
                ip("link", "set", dev, "up")
            else:
                ns = self.NS[role]
                ip("link", "set", dev, "netns", ns)
                ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
                ip("-n", ns, "link", "set", "lo", "up")
        # Each host holds its own identity's address (keepalived's job on real hosts).
        self.add_addr("host1", IDENTITIES["r1"])
        self.add_addr("host2", IDENTITIES["r2"])

    def add_addr(self, host, addr):
        ip("-n", self.NS[host], "addr", "add", f"{addr}/24", "dev", self.DEV[host])

    def mac(self, host):
        out = ip("-n", self.NS[host], "-o", "link", "show", self.DEV[host])
        return re.search(r"link/ether (\S+)", out).group(1)

    def neighbour(self, addr):
        """The runner's namespace's neighbour entry for `addr`: (MAC or None, the line)."""
        line = ip("neigh", "show", addr, "dev", self.DEV["root"]).strip()
        m = re.search(r"lladdr (\S+)", line)
        return (m.group(1) if m else None), line

    def pids(self, host):
        return [int(p) for p in ip("netns", "pids", self.NS[host]).split()]

    def remove(self):
        for ns in self.NS.values():
            ip("netns", "del", ns, check_rc=False)
        ip("link", "del", self.DEV["root"], check_rc=False)


class Fleet:
    """Redis on 10.77.0.100 (TCP), a KEK per identity, four relay processes (host1's r1 and
    host2's r2 holding their identities, then host1's standby of r2 and host2's of r1, each
    with its own metrics port on its host's address), and Kamailio with both identities' ng
    addresses in one rtpengine set."""

    def __init__(self, ctx, lab):
        b = ctx.base
        self.lab = lab
        self.redis = Redis(ctx.procs, ctx.workdir, tcp=(PROXY, b + 5))
        configs = {}
        for ident in IDENTITIES:
            kek = os.path.join(ctx.workdir, f"kek-{ident}")
            write_kek(kek)
            configs[ident] = FLEET_CONFIG.format(proxy=PROXY, redis_port=b + 5, identity=ident,
                                                 kek=kek, lease_ms=int(LEASE_S * 1000))
        ports = {"r1": (b + 100, b + 149), "r2": (b + 150, b + 199)}
        self.relays = {}
        for k, (host, ident, standby) in enumerate((
                ("host1", "r1", False), ("host2", "r2", False),
                ("host1", "r2", True), ("host2", "r1", True))):
            relay = Relay(ctx.procs, ctx.relay_bin, b, config=configs[ident],
                          name=f"{host}-{ident}", ports=ports[ident], ng_port=NG_PORT,
                          host=IDENTITIES[ident], metrics_host=HOSTS[host],
                          metrics_port=b + 1 + k, netns=lab.NS[host], client=PROXY,
                          standby=standby)
            ctx.relays.append(relay)
            self.relays[host, ident] = relay
        time.sleep(0.3)
        roles = {f"{h}-{i}": r.healthz() for (h, i), r in self.relays.items()}
        check(roles == {"host1-r1": (200, "ok"), "host2-r2": (200, "ok"),
                        "host1-r2": (503, "standby"), "host2-r1": (503, "standby")},
              "host1 serving r1 and host2 r2 (/healthz 200 ok), each the other's standby "
              "(/healthz 503 standby)", roles)
        # ng commands go to the identity's address, whichever process holds it.
        self.ng = {"r1": self.relays["host1", "r1"], "r2": self.relays["host2", "r2"]}
        self.ctl = os.path.join(ctx.workdir, "kamailio.ctl")
        ctx.kamailio = Kamailio(
            ctx.procs, b + 10, None, host=PROXY,
            ng_urls=[f"udp:{IDENTITIES[i]}:{NG_PORT}" for i in ("r1", "r2")],
            defines=["WITH_FLEET", f'PHONE_HOST="{PROXY}"', "RELAY_TOUT_MS=400",
                     "RELAY_RETR=5", f'CTL_SOCKET="unix:{self.ctl}"'])
        self.kam = ctx.kamailio

    def holder(self, cid):
        """The identity whose relay has the call (by ng `query` on each identity's address)."""
        for ident, relay in self.ng.items():
            q = relay.cmd({"command": "query", "call-id": cid})
            if q.get("result") == "ok" and "totals" in q:
                return ident
        return None

    def kamcmd(self, *args):
        r = subprocess.run(["kamcmd", "-s", f"unix:{self.ctl}", *args], capture_output=True,
                           text=True, timeout=10)
        check(r.returncode == 0, f"`kamcmd {' '.join(args)}` to succeed",
              f"exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
        return r.stdout

    def ctl_relay(self, relay_bin, action, ident):
        r = subprocess.run([relay_bin, "ctl", action, "--ng", f"{IDENTITIES[ident]}:{NG_PORT}"],
                           capture_output=True, text=True, timeout=10)
        check(r.returncode == 0, f"`srtp-relay ctl {action} --ng {IDENTITIES[ident]}:{NG_PORT}` "
              "to exit 0", f"exit {r.returncode}: {r.stdout.strip()} {r.stderr.strip()}")
        return r.stdout


class Pair:
    """alice<i> (srtp-mand, 440 Hz, ctrl_tcp) calls bob<i> (srtp-mand, 660 Hz, his leg under
    enforce) through Kamailio, both on 10.77.0.100."""

    def __init__(self, ctx, i, seconds):
        b = ctx.base
        self.i = i
        self.alice = Baresip(ctx.workdir, f"alice{i}", b + 20 + 4 * i, b + 40 + 20 * i,
                             ctx.tone(440, 90), "srtp-mand", ctrl_port=b + 30 + i, addr=PROXY)
        self.bob = Baresip(ctx.workdir, f"bob{i}", b + 22 + 4 * i, b + 50 + 20 * i,
                           ctx.tone(660, 90), "srtp-mand", addr=PROXY)
        self.bob.start(ctx.procs, seconds)
        self.bob.wait_bound()
        self.alice.start(ctx.procs, seconds)
        self.alice.wait_bound()
        self.cid = None

    def dial(self, fleet):
        """Dials, waits for the 200 OK to reach alice; returns the identity that has the call."""
        kam = fleet.kam
        known = {m.call_id for _, _, m in kam.messages()}
        self.wavs0 = set(self.alice.decoded_wavs()), set(self.bob.decoded_wavs())
        self.alice.command("dial", f"sip:enforce-{self.bob.sip_port}-{self.bob.name}@{PROXY}:"
                           f"{kam.port}")
        ok = wait_until(f"{self.bob.name}'s 200 OK forwarded to {self.alice.name}", lambda: next(
            (m for d, dst, m in kam.messages() if d == "out" and m.status == 200
             and m.method == "INVITE" and m.call_id not in known
             and dst == f"{PROXY}:{self.alice.sip_port}"), None), 8)
        self.cid, self.ok = ok.call_id, ok
        self.ident = fleet.holder(self.cid)
        check(self.ident, f"{self.cid} known to one identity (ng query)", "to neither")
        return self.ident

    def hangup(self, kam):
        cid = self.cid
        self.alice.command("hangup")
        wait_until(f"the BYE of {cid} answered through Kamailio (200 OK to {self.alice.name})",
                   lambda: any(d == "out" and m.status == 200 and m.method == "BYE"
                               and m.call_id == cid for d, _, m in kam.messages()), 8)

    def reinvite(self, kam):
        """alice re-INVITEs (baresip's `reinvite`: the same SDP again); waits for the second
        200 OK to an INVITE of the call to reach her."""
        cid = self.cid

        def oks():
            return [m for d, dst, m in kam.messages() if d == "out" and m.status == 200
                    and m.method == "INVITE" and m.call_id == cid
                    and dst == f"{PROXY}:{self.alice.sip_port}"]
        n = len({m.headers.get("cseq") for m in oks()})
        self.alice.command("reinvite")
        wait_until(f"the 200 OK to {self.alice.name}'s re-INVITE of {cid} through Kamailio",
                   lambda: len({m.headers.get("cseq") for m in oks()}) > n, 10)

    def new_wavs(self):
        return (sorted(set(self.alice.decoded_wavs()) - self.wavs0[0]),
                sorted(set(self.bob.decoded_wavs()) - self.wavs0[1]))


def place_calls(fleet, pairs, want):
    """Each pair dials; a pair whose call lands on an identity other than `want[i]` (None: any
    identity not yet covered, if one is left) hangs up and dials again, 8 tries at most."""
    placed = []
    for pair, ident in zip(pairs, want):
        for _ in range(8):
            got = pair.dial(fleet)
            wanted = ident or next((i for i in IDENTITIES if i not in placed), got)
            if not ident and not placed:
                wanted = got
            if got == wanted:
                break
            pair.hangup(fleet.kam)
            time.sleep(1.1)  # baresip names its WAVs by the second
        check(got == wanted, f"a call of pair {pair.i} on {wanted} within 8 tries (Kamailio "
              "hashes the Call-ID)", f"every one on {got}")
        placed.append(got)
    return placed


def is_probe(line):
    """The runner's own `query` of a call at the identity that does not have it."""
    return 'command="query"' in line and 'reason="unknown call-id"' in line


def ng_log(relay, command, cid):
    text = open(relay.proc.logpath, errors="replace").read()
    return text.count(f'command="{command}" call_id={cid} result="ok"')


def run_in_lab(ctx, body):
    lab = Lab()
    try:
        lab.build()
        return body(lab)
    finally:
        ctx.procs.stop_all()  # every process of the lab, before its namespaces go
        lab.remove()


# ---------------------------------------------------------------------------------------------
# fleet-host-killed


def fleet_host_killed(ctx):
    """Two calls between baresip pairs (SRTP both legs), one on each identity. Host 1 is killed
    whole: every process in its namespace SIGKILLed (by PID) and its link taken down; then, as
    keepalived would, host 2 adds r1's address and sends gratuitous ARP. host2's standby of r1
    takes the lease when it expires and restores r1's call from the store. Both calls go on
    with the tones both ways (no SRTP failure at any phone); r2's call does not notice; the r1
    call's re-INVITE and BYE go through Kamailio to r1, now on host 2; the store is empty at
    the end."""
    return run_in_lab(ctx, lambda lab: host_killed(ctx, lab))


def host_killed(ctx, lab):
    fleet = Fleet(ctx, lab)
    kam = fleet.kam
    pairs = [Pair(ctx, i, 80) for i in range(2)]
    placed = place_calls(fleet, pairs, [None, None])
    by_ident = {ident: pair for pair, ident in zip(pairs, placed)}
    p1, p2 = by_ident["r1"], by_ident["r2"]
    h1r1, h2r2, h2r1 = (fleet.relays[k] for k in (("host1", "r1"), ("host2", "r2"),
                                                  ("host2", "r1")))
    wait_until("both calls' records in the store (SCARD 1 per identity)",
               lambda: (fleet.redis.calls("r1"), fleet.redis.calls("r2")) == (1, 1), 5)
    wait_until("host1-r1 and host2-r2 forwarding SRTP both ways (150 packets each)",
               lambda: forwarded(h1r1) >= 150 and forwarded(h2r2) >= 150, 8)
    wavs = {p.i: wait_until(f"pair {p.i}: baresip writing what it decodes on both sides",
                            lambda p=p: p.alice.decoded_wav() and p.bob.decoded_wav()
                            and (p.alice.decoded_wav(), p.bob.decoded_wav()), 5) for p in pairs}
    poller = MetricsPoller(h2r2, ["decrypt+encrypt"])
    time.sleep(TALK_BEFORE_S)
    before = forwarded(h1r1)

    # 1. Host 1 dies whole; host 2 takes r1's address (keepalived's part).
    sizes = {i: [os.path.getsize(w) for w in ws] for i, ws in wavs.items()}
    t_kill = time.monotonic()
    mine = {p.pid: p for p in ctx.procs.running}
    pids = lab.pids("host1")
    check(pids and set(pids) <= set(mine), "only the scenario's own relays in host1's namespace",
          pids)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        mine[pid].wait(timeout=5)
    ip("-n", lab.NS["host1"], "link", "set", lab.DEV["host1"], "down")
    lab.add_addr("host2", IDENTITIES["r1"])
    ctx.procs.start("arping", ["ip", "netns", "exec", lab.NS["host2"], "arping", "-U", "-c", "2",
                               "-I", lab.DEV["host2"], IDENTITIES["r1"]])
    wait_until(f"host2-r1's /healthz to say 200 (within the {LEASE_S:.0f} s lease and 4 s more)",
               lambda: (h2r1.healthz() or (0,))[0] == 200, LEASE_S + 4, 0.02)
    t_active = time.monotonic()
    fleet.ng["r1"] = h2r1
    mac2 = lab.mac("host2")
    try:
        seen = wait_until("the proxy's neighbour entry for r1's address to name host2 "
                          "(gratuitous ARP) or to be gone",
                          lambda: lab.neighbour(IDENTITIES["r1"])[0] in (mac2, None)
                          and [lab.neighbour(IDENTITIES["r1"])[0]], 2.5, 0.05)[0]
        arp = ("the proxy's neighbour entry moved to host2 by gratuitous ARP" if seen
               else "the proxy had no neighbour entry left")
    except Fail:
        ip("neigh", "flush", "to", IDENTITIES["r1"])
        arp = "the proxy's neighbour entry flushed (gratuitous ARP not taken)"
    wait_until("host2-r1 to forward the r1 call's SRTP", lambda: forwarded(h2r1) > 0, 5, 0.02)
    t_media = time.monotonic()
    time.sleep(TALK_AFTER_S)
    after = forwarded(h2r1)
    m = h2r1.metrics()
    poller.stop()
    silence, s0, s1 = poller.longest_silence("decrypt+encrypt", t_kill - 1, t_media + 2,
                                             packet_s=0.01)

    # 2. The r1 call's re-INVITE and both BYEs through Kamailio.
    offers0 = ng_log(h2r1, "offer", p1.cid)
    p1.reinvite(kam)
    time.sleep(1.0)
    offers1 = ng_log(h2r1, "offer", p1.cid)
    for p in (p1, p2):
        p.hangup(kam)
    wait_until("no call left on either identity (list)", lambda: all(
        r.cmd({"command": "list"}).get("calls") == [] for r in (h2r1, h2r2)), 5)
    wait_until("the store to hold no call after the BYEs (SCARD 0 per identity)",
               lambda: (fleet.redis.calls("r1"), fleet.redis.calls("r2")) == (0, 0), 5)
    time.sleep(0.8)  # baresip closes its WAVs when the call ends

    # 3. What the relays, Kamailio and the phones show.
    for p in pairs:
        to_bob = must(find(one_call(kam.messages(), p.cid), "out",
                           dst=f"{PROXY}:{p.bob.sip_port}", method="INVITE"),
                      f"Kamailio to forward {p.cid}'s INVITE to {p.bob.name}")
        check(f"c=IN IP4 {IDENTITIES[p.ident]}" in to_bob.sdp().text
              and f"c=IN IP4 {IDENTITIES[p.ident]}" in p.ok.sdp().text,
              f"{p.cid}: both legs' SDP naming {p.ident}'s address {IDENTITIES[p.ident]}",
              (to_bob.sdp().text, p.ok.sdp().text))
    check(offers1 == offers0 + 1, f"the re-INVITE's offer of {p1.cid} answered by host2-r1 (r1 "
          "on host 2)", f"{offers0} offers before, {offers1} after")
    check(ng_log(h2r1, "delete", p1.cid) >= 1, f"host2-r1 to answer the delete of {p1.cid}",
          "no such log line")
    check(ng_log(h2r2, "delete", p2.cid) >= 1, f"host2-r2 to answer the delete of {p2.cid}",
          "no such log line")
    errors = [line for r in ctx.relays for line in open(r.proc.logpath, errors="replace")
              if 'result="error"' in line and not is_probe(line)]
    check(not errors, "no ng command to fail on any process", errors[:3])
    kam_errors = [line for line in open(kam.proc.logpath, errors="replace")
                  if "rtpengine" in line and "ERROR" in line]
    check(not kam_errors, "Kamailio to reach the relays for every ng command", kam_errors[:3])
    took, gap = t_active - t_kill, t_media - t_kill
    restored = counter(m, "srtp_relay_ha_restored_calls_total")
    check(restored == 1 and counter(m, "srtp_relay_ha_restore_failures_total") == 0
          and counter(m, "srtp_relay_ha_takeovers_total") == 1,
          "host2-r1: one takeover, one call restored, no restore failure",
          {k: v for k, v in m.items() if k.startswith("srtp_relay_ha_") and "latency" not in k})
    check(took <= LEASE_S + 2.5, f"host2-r1 serving within the {LEASE_S:.0f} s lease and 2.5 s "
          "more after the kill", f"{took:.2f} s")
    check(after >= 70 * TALK_AFTER_S, f"host2-r1 to forward the r1 call both ways for "
          f"{TALK_AFTER_S:.0f} s (>= {70 * TALK_AFTER_S:.0f} packets)", after)
    check(silence < 0.5, "host2-r2's call not to notice host 1's death (no stretch of 0.5 s "
          "without its packets)", f"{silence:.2f} s silent from {s0 - t_kill:+.2f} s to "
          f"{s1 - t_kill:+.2f} s after the kill")
    for p in pairs:
        for ua in (p.alice, p.bob):
            bad = decrypt_errors(ua)
            check(not bad, f"{ua.name}: no SRTP packet failing authentication or replayed "
                  "(baresip's srtp module)", f"{len(bad)} lines: {bad[:3]}")
    heard = {}
    for p in pairs:
        for ua, freq, wav, size in ((p.bob, 440, wavs[p.i][1], sizes[p.i][1]),
                                    (p.alice, 660, wavs[p.i][0], sizes[p.i][0])):
            head, tail = split_wav(wav, size, os.path.join(ua.dir, "before-kill.wav"),
                                   os.path.join(ua.dir, "after-kill.wav"))
            expect_tone(head, freq, TALK_BEFORE_S - 1, f"{ua.name} ({p.ident}) before the kill")
            heard[ua.name] = expect_tone(tail, freq, TALK_AFTER_S - 1.5,
                                         f"{ua.name} ({p.ident}) after the kill")[0]
    return (f"r1 call {p1.cid} and r2 call {p2.cid}; host1 killed after {before:.0f} packets "
            f"on r1; host2-r1 serving after {took:.2f} s, forwarding after {gap:.2f} s (lease "
            f"{LEASE_S:.0f} s; {arp}); {after:.0f} packets in {TALK_AFTER_S:.0f} s; r2's "
            f"longest silence {silence:.2f} s; tone after the kill "
            + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(heard.items()))
            + "; re-INVITE and delete of the r1 call on host2-r1, store empty")


# ---------------------------------------------------------------------------------------------
# fleet-drain


def fleet_drain(ctx):
    """Both hosts up. A call on r1 (pair 0). Then r1 is drained twice over: Kamailio's
    `rtpengine.enable <r1> 0` and the relay's own `srtp-relay ctl drain`. New calls (pair 1;
    at least one whose Call-ID hashes to r1) all land on r2, while pair 0's re-INVITE still
    reaches r1 (rtpengine_allow_op) and the call goes on. Then Kamailio enables r1 again while
    the relay stays drained: a new call hashing to r1 is refused by r1 (load limit) and
    Kamailio sends it to r2. After `ctl undrain`, pair 0 hangs up: the delete reaches r1."""
    return run_in_lab(ctx, lambda lab: drain(ctx, lab))


def drain(ctx, lab):
    fleet = Fleet(ctx, lab)
    kam = fleet.kam
    r1, r2 = fleet.ng["r1"], fleet.ng["r2"]
    p0, p1 = Pair(ctx, 0, 80), Pair(ctx, 1, 80)
    place_calls(fleet, [p0], ["r1"])
    wav0 = wait_until("pair 0: baresip writing what it decodes on both sides",
                      lambda: p0.alice.decoded_wav() and p0.bob.decoded_wav()
                      and (p0.alice.decoded_wav(), p0.bob.decoded_wav()), 5)
    time.sleep(1.5)
    url = f"udp:{IDENTITIES['r1']}:{NG_PORT}"
    slot_r1 = 0  # the first node of the set

    # 1. Drained in Kamailio and in the relay.
    fleet.kamcmd("rtpengine.enable", url, "0")
    fleet.ctl_relay(ctx.relay_bin, "drain", "r1")
    status = fleet.ctl_relay(ctx.relay_bin, "status", "r1")
    shown = fleet.kamcmd("rtpengine.show", "all")
    new = []
    while len(new) < 3 or (not any(kamailio_slot(c, 2) == slot_r1 for c, _ in new)
                           and len(new) < 8):
        time.sleep(1.1)
        p1.dial(fleet)
        new.append((p1.cid, p1.ident))
        time.sleep(1.0)
        p1.hangup(kam)
    check(all(ident == "r2" for _, ident in new), "every new call during r1's drain on r2",
          new)
    hashed = [c for c, _ in new if kamailio_slot(c, 2) == slot_r1]
    check(hashed, "a new call during the drain whose Call-ID hashes to r1 (the drain, not luck)",
          [c for c, _ in new])
    offers0 = ng_log(r1, "offer", p0.cid)
    p0.reinvite(kam)
    time.sleep(1.0)
    offers1 = ng_log(r1, "offer", p0.cid)
    check(offers1 == offers0 + 1, f"pair 0's re-INVITE of {p0.cid} to reach r1 while drained",
          f"{offers0} offers before, {offers1} after")
    m = r1.metrics()
    limited_kam = counter(m, "srtp_relay_load_limited_total")

    # 2. Enabled in Kamailio, still drained in the relay: r1 refuses new calls itself.
    fleet.kamcmd("rtpengine.enable", url, "1")
    tries, refused = [], None
    while not refused and len(tries) < 8:
        time.sleep(1.1)
        p1.dial(fleet)
        tries.append((p1.cid, p1.ident))
        time.sleep(1.0)
        p1.hangup(kam)
        if kamailio_slot(p1.cid, 2) == slot_r1:
            refused = tries[-1]
    check(refused and refused[1] == "r2", "a new call hashing to r1, refused by the drained r1 "
          "and sent on to r2 by Kamailio (8 tries)", tries)
    limited = counter(r1.metrics(), "srtp_relay_load_limited_total") - limited_kam
    check(limited >= 1, "r1 to count the refused offer (srtp_relay_load_limited_total)", limited)

    # 3. Undrained; pair 0 hangs up on r1.
    fleet.ctl_relay(ctx.relay_bin, "undrain", "r1")
    time.sleep(1.0)
    p0.hangup(kam)
    check(ng_log(r1, "delete", p0.cid) >= 1, f"r1 to answer the delete of {p0.cid}",
          "no such log line")
    wait_until("no call left on either identity (list)", lambda: all(
        r.cmd({"command": "list"}).get("calls") == [] for r in (r1, r2)), 5)
    time.sleep(0.8)
    for ua in (p0.alice, p0.bob, p1.alice, p1.bob):
        bad = decrypt_errors(ua)
        check(not bad, f"{ua.name}: no SRTP packet failing authentication or replayed",
              f"{len(bad)} lines: {bad[:3]}")
    for ua, freq, wav in ((p0.bob, 440, wav0[1]), (p0.alice, 660, wav0[0])):
        expect_tone(wav, freq, 8.0, f"{ua.name} (r1 call through the drain and re-INVITE)")
    errors = [line for r in (r1, r2) for line in open(r.proc.logpath, errors="replace")
              if 'result="error"' in line and not is_probe(line)]
    check(not errors, "no ng command from Kamailio to fail on r1 or r2", errors[:3])
    check("draining: 1" in status, "`srtp-relay ctl status` of r1 to say it is draining",
          status)
    check("disabled: 1(permanent)" in " ".join(shown.split()),
          "`kamcmd rtpengine.show all` to list r1 disabled (permanent)", shown)
    return (f"r1 drained (kamcmd rtpengine.enable 0, and ctl drain: {' '.join(status.split())})"
            f"; {len(new)} new calls all on r2 ({len(hashed)} hashing to r1); pair 0's "
            f"re-INVITE answered by r1; with r1 enabled again in Kamailio, the drained relay "
            f"refused {limited:.0f} offer(s) (load limit) and Kamailio sent the call to r2; "
            "pair 0's delete on r1 after ctl undrain")
