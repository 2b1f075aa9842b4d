"""High availability (the relay's [ha] section): two relay processes of one identity sharing a
Redis store, the first serving, the second a standby; the first is killed mid-call and the
standby takes the call over with its keys, so both SRTP phones go on decrypting."""
import os
import signal
import subprocess
import time
import wave

from harness import Fail, check, counter, expect_tone, wait_until
from peers import Baresip

from .common import drops, expect_leg, find, must, one_call, wait_sip


# ---------------------------------------------------------------------------------------------
# 18. Two baresip UAs in an SRTP call through Kamailio and relay process A of an HA identity;
# process B of the same identity waits as a standby; A is killed (SIGKILL) mid-call, B takes
# the identity over, restores the call from the store and the call goes on; the BYE's delete
# reaches B on the same ng address and the store is empty afterwards.

IDENTITY = "interop-ha"
LEASE_S = 2.0  # the relay's default [ha] lease_ms
TALK_BEFORE_S = 3.0
TALK_AFTER_S = 5.0

HA_CONFIG = """[ha]
store = "unix://{socket}"
identity = "{identity}"
kek_file = "{kek}"
"""


class Redis:
    """A redis-server of the scenario's own, as relay/tests/support/ha.rs runs it: no TCP port,
    a unix socket in <workdir>/redis, an append-only file fsynced at every write. `tcp`
    (host, port): TCP on that address only instead (the fleet scenarios' hosts reach it over
    their lab network), no unix socket."""

    def __init__(self, procs, workdir, tcp=None):
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir)
        self.socket = os.path.join(self.dir, "redis.sock")
        if tcp:
            listen = ["--port", str(tcp[1]), "--bind", tcp[0], "--protected-mode", "no"]
            self.where = ["-h", tcp[0], "-p", str(tcp[1])]
        else:
            listen = ["--port", "0", "--unixsocket", self.socket, "--unixsocketperm", "700"]
            self.where = ["-s", self.socket]
        self.proc = procs.start("redis", [
            "redis-server", *listen, "--dir", self.dir, "--appendonly", "yes",
            "--appendfsync", "always", "--save", ""])
        wait_until("redis-server to answer PING", lambda: self.cli("PING") == "PONG", 10, 0.1)

    def cli(self, *args):
        """redis-cli's output for one command (stripped), None if it failed."""
        try:
            r = subprocess.run(["redis-cli", *self.where, *args], capture_output=True,
                               text=True, timeout=5)
        except subprocess.TimeoutExpired:
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    def calls(self, identity=IDENTITY):
        """How many calls the identity's record set holds (SCARD), None if the store did not
        answer."""
        n = self.cli("SCARD", f"srtp-relay:{{{identity}}}:calls")
        return int(n) if n is not None and n.isdigit() else None


def write_kek(path):
    """A KEK of the scenario's own: 32 random bytes, readable by the owner only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))


def forwarded(relay):
    """SRTP packets the relay decrypted and re-encrypted, both directions."""
    return counter(relay.metrics(), "srtp_relay_packets_total", direction="out",
                   transform="decrypt+encrypt")


def split_wav(path, size_then, before, after):
    """Splits what baresip decoded into `path` at the moment the file had `size_then` bytes
    (baresip writes each decoded frame as it comes): the audio until then into `before`, the
    rest into `after`."""
    try:
        with wave.open(path, "rb") as w:
            params, n = w.getparams(), w.getnframes()
            frame = w.getsampwidth() * w.getnchannels()
            header = os.path.getsize(path) - n * frame
            at = max(0, min(n, (size_then - header) // frame))
            head, tail = w.readframes(at), w.readframes(n - at)
    except (EOFError, wave.Error) as e:
        raise Fail(f"a WAV recording at {path}; got an empty or unreadable file ({e})") from None
    for out, frames in ((before, head), (after, tail)):
        with wave.open(out, "wb") as o:
            o.setparams(params)
            o.writeframes(frames)
    return before, after


def decrypt_errors(ua):
    """baresip's srtp module logs every packet it fails to authenticate or finds replayed."""
    return [line for line in ua.log().splitlines() if "srtp: failed to decrypt" in line]


def ha_takeover(ctx):
    """alice (srtp-mand, 440 Hz) calls bob (srtp-mand, 660 Hz, his leg under enforce) through
    the suite's Kamailio, whose one rtpengine node is the identity's ng address. relay-a holds
    the identity's lease and serves; relay-b (same configuration, its own metrics port) is a
    standby: /healthz 503 `standby`. Mid-call relay-a is killed (SIGKILL, by PID); relay-b
    takes the lease when it expires, restores the call from the store and binds the same ng
    and media addresses. Both phones keep decrypting: the tone both ways in what they decoded
    after the takeover, no SRTP authentication or replay failure in their logs. alice hangs up;
    the BYE's delete reaches relay-b, and the store holds no call afterwards."""
    b = ctx.base
    redis = Redis(ctx.procs, ctx.workdir)
    kek = os.path.join(ctx.workdir, "kek")
    write_kek(kek)
    config = HA_CONFIG.format(socket=redis.socket, identity=IDENTITY, kek=kek)
    a = ctx.start_relay(config=config, name="relay-a")
    check(a.healthz() == (200, "ok"), "relay-a, the first process of the identity, to serve "
          "(/healthz 200 ok)", a.healthz())
    relay_b = ctx.start_relay(config=config, name="relay-b", metrics_port=b + 3, standby=True)
    # The standby waits for the lease: it answers /healthz with 503 and binds nothing.
    time.sleep(0.3)
    check(relay_b.healthz() == (503, "standby") and relay_b.proc.poll() is None,
          "relay-b, the second process of the identity, to wait as a standby (/healthz 503 "
          "standby)", relay_b.healthz() or f"exit {relay_b.proc.returncode}")
    roles = (counter(a.metrics(), "srtp_relay_ha_active"),
             counter(relay_b.metrics(), "srtp_relay_ha_active"))
    check(roles == (1, 0), "srtp_relay_ha_active 1 on relay-a and 0 on relay-b", roles)
    ctx.free0 = a.cmd({"command": "statistics"})["free-port-pairs"]

    kam = ctx.start_kamailio()
    alice = Baresip(ctx.workdir, "alice", b + 20, b + 40, ctx.tone(440), "srtp-mand",
                    ctrl_port=b + 28)
    bob = Baresip(ctx.workdir, "bob", b + 22, b + 60, ctx.tone(660), "srtp-mand")
    bob.start(ctx.procs, 55)
    bob.wait_bound()
    alice.start(ctx.procs, 55)
    alice.command("dial", f"sip:enforce-{b + 22}-bob@127.0.0.1:{kam.port}")
    ok = wait_sip(kam, "bob's 200 OK forwarded to alice", direction="out",
                  dst=f"127.0.0.1:{b + 20}", status=200, method="INVITE")
    cid = ok.call_id

    # 1. The call runs through relay-a, and its record is in the store.
    wait_until("the call's record in the store (SCARD of the identity's calls 1)",
               lambda: redis.calls() == 1, 5)
    wait_until("relay-a to forward SRTP both ways (150 packets decrypted and re-encrypted)",
               lambda: forwarded(a) >= 150, 8)
    wavs = wait_until("baresip to write what it decodes on both sides",
                      lambda: alice.decoded_wav() and bob.decoded_wav()
                      and (alice.decoded_wav(), bob.decoded_wav()), 5)
    time.sleep(TALK_BEFORE_S)
    before = forwarded(a)
    drops_a = drops(a.metrics())

    # 2. relay-a is killed; relay-b takes the identity over.
    t_kill = time.monotonic()
    os.kill(a.proc.pid, signal.SIGKILL)
    a.proc.wait(timeout=5)
    wait_until(f"relay-b's /healthz to say 200 (within the {LEASE_S:.0f} s lease and 8 s more)",
               lambda: (relay_b.healthz() or (0,))[0] == 200, LEASE_S + 8, 0.02)
    t_active = time.monotonic()
    sizes = [os.path.getsize(w) for w in wavs]
    wait_until("relay-b to forward the call's SRTP", lambda: forwarded(relay_b) > 0, 5, 0.02)
    t_media = time.monotonic()
    time.sleep(TALK_AFTER_S)
    after = forwarded(relay_b)
    m = relay_b.metrics()
    q = relay_b.cmd({"command": "query", "call-id": cid})

    # 3. alice hangs up through Kamailio: the delete goes to relay-b.
    alice.command("hangup")
    wait_until(f"the BYE of {cid} answered through Kamailio (200 OK to alice)", lambda: any(
        d == "out" and msg.status == 200 and msg.method == "BYE" and msg.call_id == cid
        for d, _, msg in kam.messages()), 8)
    wait_until("relay-b to list no call after the BYE",
               lambda: relay_b.cmd({"command": "list"}).get("calls") == [], 5)
    wait_until("the store to hold no call after the BYE (SCARD of the identity's calls 0)",
               lambda: redis.calls() == 0, 5)
    time.sleep(0.8)  # baresip closes its WAVs when the call ends

    # 4. What the SIP, the relays, the store and the phones show.
    msgs = one_call(kam.messages(), cid)
    to_bob = must(find(msgs, "out", dst=f"127.0.0.1:{b + 22}", method="INVITE"),
                  "Kamailio to forward the INVITE to bob")
    expect_leg(to_bob.sdp(), "INVITE to bob", "RTP/SAVP", True, ctx)
    expect_leg(ok.sdp(), "200 OK to alice", "RTP/SAVP", True, ctx)
    log_a, log_b = (open(r.proc.logpath, errors="replace").read() for r in (a, relay_b))
    for cmd in ("offer", "answer"):
        check(f'command="{cmd}" call_id={cid} result="ok"' in log_a,
              f"relay-a to answer Kamailio's ng {cmd} of {cid}", "no such log line")
    check(f'command="delete" call_id={cid} result="ok"' in log_b,
          f"relay-b to answer the delete of {cid} at the BYE (same ng address)",
          [line for line in log_b.splitlines() if 'command="delete"' in line] or "no delete")
    errors = [line for line in log_a.splitlines() + log_b.splitlines() if 'result="error"' in line]
    check(not errors, "no ng command to fail on either process", errors[:3])
    kam_errors = [line for line in open(kam.proc.logpath, errors="replace")
                  if "can't send command" in line or ("rtpengine" in line and "ERROR" in line)]
    check(not kam_errors, "Kamailio to reach the relay for every ng command", kam_errors[:3])
    check(q.get("result") == "ok", f"relay-b to know {cid} after the takeover (query)", q)
    restored = counter(m, "srtp_relay_ha_restored_calls_total")
    check(restored == 1 and counter(m, "srtp_relay_ha_restore_failures_total") == 0
          and counter(m, "srtp_relay_ha_takeovers_total") == 1,
          "relay-b: one takeover, srtp_relay_ha_restored_calls_total 1, no restore failure",
          {k: v for k, v in m.items() if k.startswith("srtp_relay_ha_") and "latency" not in k})
    took, gap = t_active - t_kill, t_media - t_kill
    check(took <= LEASE_S + 2, f"relay-b serving within the {LEASE_S:.0f} s lease and 2 s more "
          "after the kill", f"{took:.2f} s")
    check(after >= 70 * TALK_AFTER_S,
          f"relay-b to forward the call both ways for {TALK_AFTER_S:.0f} s (>= "
          f"{70 * TALK_AFTER_S:.0f} packets decrypted and re-encrypted)", after)
    wait_until("every port pair back in relay-b's pool",
               lambda: relay_b.cmd({"command": "statistics"})["free-port-pairs"] == ctx.free0, 5)
    d_a, d_b = drops_a, drops(relay_b.metrics())
    check(not d_a.get("auth_failed") and not d_a.get("replayed"),
          "relay-a to refuse no SRTP packet before the kill", d_a)
    # baresip's plain RTCP BYE at the hang-up: one auth_failed per side at most.
    check(d_b.get("auth_failed", 0) <= 2 and not d_b.get("replayed"),
          "relay-b to refuse at most the 2 plain RTCP BYEs at the hang-up, no replay", d_b)
    for ua in (alice, bob):
        bad = decrypt_errors(ua)
        check(not bad, f"{ua.name}: no SRTP packet failing authentication or replayed "
              "(baresip's srtp module)", f"{len(bad)} lines: {bad[:3]}")
    heard = {}
    for ua, freq, wav, size in ((bob, 440, wavs[1], sizes[1]), (alice, 660, wavs[0], sizes[0])):
        head, tail = split_wav(wav, size, os.path.join(ua.dir, "before-takeover.wav"),
                               os.path.join(ua.dir, "after-takeover.wav"))
        expect_tone(head, freq, TALK_BEFORE_S - 1, f"{ua.name} before the kill (relay-a)")
        heard[ua.name] = expect_tone(tail, freq, TALK_AFTER_S - 1.5,
                                     f"{ua.name} after the takeover (relay-b)")[0]
    return (f"relay-a killed after {before:.0f} packets; relay-b serving after {took:.2f} s, "
            f"forwarding after {gap:.2f} s (lease {LEASE_S:.0f} s), {after:.0f} packets in "
            f"{TALK_AFTER_S:.0f} s; tone after the takeover {heard['bob']:.1f} s at bob, "
            f"{heard['alice']:.1f} s at alice; 1 call restored, delete on relay-b, store "
            f"empty; relay-b's drops {drops(m)} before the hang-up, {d_b} after")
