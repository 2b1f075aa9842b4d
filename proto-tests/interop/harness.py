"""The interop suite's plumbing: processes, the relay, Kamailio, the SIP peers' configurations,
SDP and WAV analysis. The scenarios themselves are in `scenarios/`.

Every process is started in its own process group and stopped by that group's id (its PID) when
its scenario ends, whatever the outcome. Everything listens on loopback only (127.0.0.1; the
two-interface scenario also on 127.0.0.2 and 127.0.0.3), but for the fleet scenarios, whose
network namespaces and addresses (10.77.0.0/24) scenarios/fleet.py makes and removes.
"""
import base64
import math
import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import urllib.error
import urllib.request
import wave

HERE = os.path.dirname(os.path.abspath(__file__))


class Fail(Exception):
    """A scenario's assertion failed; the message says what was expected and what came."""


def check(cond, expected, got):
    if not cond:
        raise Fail(f"expected {expected}; got {got}")


# ---------------------------------------------------------------------------------------------
# Processes


class Procs:
    """The processes of one scenario, stopped by PID (their process group) at the end."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.running = []

    def start(self, name, argv, env=None, stdin=None, cwd=None):
        log = open(os.path.join(self.workdir, f"{name}.log"), "wb")
        p = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=stdin if stdin is not None else subprocess.DEVNULL,
            cwd=cwd or self.workdir,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # its own group: its children are stopped with it
        )
        p.name, p.logpath = name, log.name
        self.running.append(p)
        return p

    def wait(self, p, timeout):
        """Waits for a process that ends by itself; a hung one is a failure."""
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail(f"{p.name} to exit within {timeout} s; it was still running") from None

    def stop_all(self):
        for p in reversed(self.running):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 3
        for p in self.running:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        self.running = []


def wait_until(what, cond, timeout, step=0.05):
    """Polls `cond` until it returns something truthy; fails with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise Fail(f"{what} within {timeout} s; it did not happen")
        time.sleep(step)


# ---------------------------------------------------------------------------------------------
# bencode and the relay


def bencode(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(bencode(x) for x in v) + b"e"
    if isinstance(v, dict):
        return b"d" + b"".join(bencode(k) + bencode(v[k]) for k in sorted(v)) + b"e"
    raise TypeError(v)


def bdecode(data, i=0):
    c = data[i:i + 1]
    if c == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1:end]), end + 1
    if c in (b"l", b"d"):
        i += 1
        items = []
        while data[i:i + 1] != b"e":
            v, i = bdecode(data, i)
            items.append(v)
        if c == b"l":
            return items, i + 1
        return {items[k]: items[k + 1] for k in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    n = int(data[i:colon])
    s = data[colon + 1:colon + 1 + n]
    try:
        s = s.decode()
    except UnicodeDecodeError:
        pass
    return s, colon + 1 + n


class Relay:
    """One srtp-relay for one scenario: ng on `base`, metrics on `metrics_port` (default
    `base+1`), media ports `ports` (default `base+100 ..= base+199`), its log (debug: every ng
    command, SDP redacted) in `<name>.log`. `args`: more command-line arguments, after the
    others (`--interface ...` replaces the media address 127.0.0.1). `standby`: a process of an
    HA identity whose lease another process holds: it binds no ng or media socket, so the
    runner waits for its /healthz to answer instead of for a ping.

    For a relay in a network namespace (the fleet scenarios): `netns` runs it there (ip netns
    exec), `host` is its ng and media address (ng on host:`ng_port`, default `base`),
    `metrics_host` its metrics address (default `host`), and `client` the runner's own address
    its ng commands go from."""

    def __init__(self, procs, binary, base, system="best-effort", config=None, name="relay",
                 ports=None, args=(), metrics_port=None, standby=False, host="127.0.0.1",
                 metrics_host=None, netns=None, ng_port=None, client="127.0.0.1"):
        self.name, self.base, self.ng_port = name, base, ng_port or base
        self.host, self.metrics_host = host, metrics_host or host
        self.metrics_port = metrics_port or base + 1
        lo, hi = ports or (base + 100, base + 199)
        argv = ["ip", "netns", "exec", netns, binary] if netns else [binary]
        if config:
            path = os.path.join(procs.workdir, f"{name}.toml")
            with open(path, "w") as f:
                f.write(config)
            argv += ["--config", path]
        argv += ["--ng", f"{host}:{self.ng_port}",
                 "--metrics", f"{self.metrics_host}:{self.metrics_port}",
                 "--media-addr", host, "--ports", f"{lo}-{hi}",
                 "--workers", "1", "--system-security", system, *args]
        self.proc = procs.start(name, argv, env={"RUST_LOG": "srtp_relay=debug"})
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((client, 0))
        self.sock.settimeout(0.3)
        self.seq = 0
        if standby:
            wait_until(f"{name} to answer /healthz", self.healthz, 10, 0.1)
        else:
            wait_until("the relay to answer ping", lambda: self.try_cmd({"command": "ping"}), 10, 0.1)

    def try_cmd(self, msg):
        self.seq += 1
        cookie = b"t%d" % self.seq
        self.sock.sendto(cookie + b" " + bencode(msg), (self.host, self.ng_port))
        try:
            while True:
                data = self.sock.recv(65536)
                if data.startswith(cookie + b" "):
                    return bdecode(data, len(cookie) + 1)[0]
        except (socket.timeout, ConnectionRefusedError):
            return None

    def cmd(self, msg):
        for _ in range(5):
            r = self.try_cmd(msg)
            if r is not None:
                return r
        raise Fail(f"a reply from the relay to {msg.get('command')}; got none")

    def metrics(self):
        """The counters and gauges of /metrics, keyed by `name{labels}`."""
        url = f"http://{self.metrics_host}:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=2).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                k, _, v = line.rpartition(" ")
                try:
                    out[k] = float(v)
                except ValueError:
                    pass
        return out

    def healthz(self):
        """(status, body) of /healthz: 200 "ok" when it serves, 503 "standby" while another
        process holds its HA identity; None while nothing answers."""
        url = f"http://{self.metrics_host}:{self.metrics_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status, r.read().decode().strip()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode().strip()
        except OSError:
            return None

    def log_for(self, call_ids):
        """The relay's log lines of these calls: each ng line naming one, with the (redacted) SDP
        lines logged just before and after it (those lines carry no call-id)."""
        try:
            lines = open(self.proc.logpath, errors="replace").read().splitlines()
        except OSError:
            return []
        # An entry may span lines (the SDP); its first line starts with the timestamp.
        entries = []
        for line in lines:
            if re.match(r"\d{4}-\d\d-\d\dT", line) or not entries:
                entries.append(line)
            else:
                entries[-1] += "\n      " + line
        lines = entries
        keep = set()
        for i, line in enumerate(lines):
            if any(c and c in line for c in call_ids):
                keep.add(i)
                if i > 0 and "ng sdp in" in lines[i - 1]:
                    keep.add(i - 1)
                if i + 1 < len(lines) and "ng sdp out" in lines[i + 1]:
                    keep.add(i + 1)
            elif "WARN" in line or "ERROR" in line:
                keep.add(i)
        return [lines[i] for i in sorted(keep)]

    def call_ids(self):
        ids = []
        try:
            for line in open(self.proc.logpath, errors="replace"):
                m = re.search(r"call_id=(\S+)", line)
                if m and m.group(1) not in ids:
                    ids.append(m.group(1))
        except OSError:
            pass
        return ids


def counter(metrics, name, **labels):
    """Sum of a metric over the series matching `labels`."""
    total = 0.0
    for k, v in metrics.items():
        if k == name or k.startswith(name + "{"):
            if all(f'{lk}="{lv}"' in k for lk, lv in labels.items()):
                total += v
    return total


class MetricsPoller:
    """Scrapes the relay's forwarded-packet counters every 50 ms in a thread, so that a
    scenario can find the longest stretch in which a direction forwarded nothing."""

    def __init__(self, relay, transforms):
        self.relay, self.transforms, self.samples = relay, transforms, []
        self.stop_flag = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_flag:
            try:
                m = self.relay.metrics()
                vals = {t: counter(m, "srtp_relay_packets_total", direction="out", transform=t)
                        for t in self.transforms}
                self.samples.append((time.monotonic(), vals))
            except Exception:  # the relay may be gone at the very end
                pass
            time.sleep(0.05)

    def stop(self):
        self.stop_flag = True
        self.thread.join(timeout=2)

    def longest_silence(self, transform, start, end, packet_s=0.02, window=1.5):
        """The longest stretch of [start, end] that `transform`'s packets (one per `packet_s`)
        do not cover: over every pair of scrapes at most `window` s apart, elapsed time minus
        packets forwarded times `packet_s`. Packets that arrive late in a burst count as
        covering, and a scrape that is itself late does not look like a gap; the window keeps
        a sender's clock drift from adding up. Returns (seconds, from, to)."""
        pts = [(t, v[transform]) for t, v in self.samples if start <= t <= end]
        best = (0.0, start, start)
        for i, (t0, c0) in enumerate(pts):
            for t1, c1 in pts[i + 1:]:
                if t1 - t0 > window:
                    break
                silent = (t1 - t0) - (c1 - c0) * packet_s
                if silent > best[0]:
                    best = (silent, t0, t1)
        return best


# ---------------------------------------------------------------------------------------------
# Kamailio


DEPLOY_KAMAILIO = os.path.normpath(os.path.join(HERE, "..", "..", "deploy", "kamailio"))


class Kamailio:
    """Kamailio with the rtpengine module pointed at the relays' ng ports. It logs every SIP
    message it receives (SIPIN) and sends (SIPOUT), base64-encoded, one per line.

    `cfg`: "kamailio.cfg" (rtpengine_offer/_answer/_delete, one relay, UDP on `port`), or
    "deploy": deploy/kamailio/kamailio.cfg as it is, with rtpengine_manage(), TLS on `port+1`
    and one rtpengine set of every relay in `ng_ports`. For "deploy" the runner lays out what
    an operator's /etc/kamailio holds, in <workdir>/kamailio-etc: kamailio.cfg and tls.cfg
    linked to the committed files, a self-signed certificate made now in tls/, and a
    kamailio-local.cfg with the ports, the SIP trace, the lab's opt-outs (INSECURE_OPEN_REGISTRAR,
    INSECURE_TLS_NO_VERIFY) and `local` (by default the lab routing of kamailio-lab.cfg).
    With "kamailio.cfg": `host` is the address it listens on, `ng_urls` its rtpengine set
    (default the relay on ng_ports[0]), `defines` more -A NAME=VALUE (see kamailio.cfg)."""

    def __init__(self, procs, port, ng_ports, cfg="kamailio.cfg", local=None, host="127.0.0.1",
                 ng_urls=None, defines=()):
        self.port, self.tls_port, self.host = port, None, host
        pid = os.path.join(procs.workdir, "kamailio.pid")
        cwd = None
        if cfg == "deploy":
            self.tls_port = port + 1
            cwd = self.deploy_etc(procs.workdir, ng_ports, local)
            args = ["-f", os.path.join(cwd, "kamailio.cfg")]
        else:
            ng = " ".join(ng_urls or [f"udp:127.0.0.1:{ng_ports[0]}"])
            args = ["-f", os.path.join(HERE, cfg), "-A", f"LISTEN_ADDR=udp:{host}:{port}",
                    "-A", f'RELAY_NG="{ng}"']
            for d in defines:
                args += ["-A", d]
        self.proc = procs.start("kamailio", [
            "kamailio", "-DD", "-E", "-m", "64", "-M", "8", *args, "-P", pid], cwd=cwd)
        wait_until("Kamailio to listen", self.listening, 10, 0.1)

    def deploy_etc(self, workdir, ng_ports, local):
        etc = os.path.join(workdir, "kamailio-etc")
        os.makedirs(os.path.join(etc, "tls"))
        for f in ("kamailio.cfg", "tls.cfg"):
            os.symlink(os.path.join(DEPLOY_KAMAILIO, f), os.path.join(etc, f))
        self.cert = make_certificate(os.path.join(etc, "tls", "kamailio-cert.pem"),
                                     os.path.join(etc, "tls", "kamailio-key.pem"))
        socks = " ".join(f"udp:127.0.0.1:{p}" for p in ng_ports)
        if local is None:
            local = f'import_file "{os.path.join(HERE, "kamailio-lab.cfg")}"\n'
        with open(os.path.join(etc, "kamailio-local.cfg"), "w") as f:
            f.write("# Written by the interop suite for one scenario.\n"
                    "#!define WITH_SIP_TRACE\n"
                    # A lab: the phones register without credentials, and the proxy does not
                    # verify the certificates of the TLS phones it calls (this run's self-signed
                    # one); the deploy file's defaults do both.
                    "#!define INSECURE_OPEN_REGISTRAR\n"
                    "#!define INSECURE_TLS_NO_VERIFY\n"
                    # Two workers, as the suite's own kamailio.cfg has: with more, a reply that
                    # needs no relay (a 180 from one fork) overtakes one that does (another
                    # fork's 183) more often, and baresip stops its early media at a 180 after
                    # a 183.
                    "#!define SIP_WORKERS 2\n"
                    f"#!define LISTEN_UDP udp:127.0.0.1:{self.port}\n"
                    f"#!define LISTEN_TLS tls:127.0.0.1:{self.tls_port}\n"
                    f'#!define RELAY_SOCKETS "{socks}"\n' + local)
        return etc

    def listening(self):
        if self.proc.poll() is not None:
            raise Fail(f"Kamailio running; it exited with {self.proc.returncode}, see {self.proc.logpath}")
        return self.is_bound()

    def is_bound(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((self.host, self.port))
            return False
        except OSError:
            return True
        finally:
            s.close()

    def messages(self):
        """[(time order, 'in'|'out', destination or '', SipMessage)] as logged."""
        out = []
        for line in open(self.proc.logpath, errors="replace"):
            m = re.search(r"SIP(IN|OUT) (\S+) ([A-Za-z0-9+/=]+)\s*$", line)
            if m:
                raw = base64.b64decode(m.group(3)).decode(errors="replace")
                out.append((m.group(1).lower(), m.group(2), SipMessage(raw)))
        return out


def make_certificate(cert, key):
    """A throwaway self-signed certificate for 127.0.0.1 (EC P-256, one day), made at run time:
    no key is ever committed. Returns the path of one PEM file with both (baresip's form)."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                   check=True, capture_output=True)
    both = os.path.join(os.path.dirname(cert), "cert-and-key.pem")
    with open(both, "w") as f:
        f.write(open(cert).read() + open(key).read())
    return both


class SipMessage:
    def __init__(self, raw):
        head, _, self.body = raw.partition("\r\n\r\n")
        lines = head.split("\r\n")
        self.first = lines[0]
        self.headers = {}
        for h in lines[1:]:
            k, _, v = h.partition(":")
            self.headers.setdefault(k.strip().lower(), v.strip())
        self.is_request = not self.first.startswith("SIP/2.0")
        self.method = self.first.split()[0] if self.is_request else self.headers.get("cseq", " ").split()[-1]
        self.status = None if self.is_request else int(self.first.split()[1])

    @property
    def call_id(self):
        return self.headers.get("call-id") or self.headers.get("i", "")

    def __repr__(self):
        return self.first

    def sdp(self):
        return Sdp(self.body) if "v=0" in self.body else None


class Sdp:
    """Just enough SDP to assert on: the m-sections with their transport, port and attributes."""

    def __init__(self, text):
        self.text = text
        self.media = []
        for line in text.replace("\r\n", "\n").split("\n"):
            if line.startswith("m="):
                kind, port, proto = line[2:].split()[:3]
                self.media.append({"kind": kind, "port": int(port), "proto": proto, "attrs": []})
            elif line.startswith("a=") and self.media:
                self.media[-1]["attrs"].append(line[2:])

    def attrs(self, i, name):
        return [a for a in self.media[i]["attrs"] if a.split(":", 1)[0] == name]

    def crypto(self, i):
        """[(tag, suite, key base64)] of m-line i's a=crypto lines."""
        out = []
        for a in self.attrs(i, "crypto"):
            tag, suite, key = a.split(":", 1)[1].split()[:3]
            out.append((tag, suite, key.split("inline:")[1].split("|")[0]))
        return out

    def acap_crypto(self, i):
        out = []
        for a in self.attrs(i, "acap"):
            parts = a.split()
            if len(parts) >= 4 and parts[1].startswith("crypto:"):
                out.append((parts[1].split(":")[1], parts[2], parts[3].split("inline:")[1]))
        return out

    def keys(self):
        """Every key in the SDP, plain a=crypto or cap-neg acap."""
        return {k for i in range(len(self.media)) for (_, _, k) in self.crypto(i) + self.acap_crypto(i)}

    def summary(self):
        return "; ".join(
            f"m={m['kind']} {m['port']} {m['proto']} "
            + " ".join(a.split(" inline:")[0] for a in m["attrs"]
                       if a.split(":")[0] in ("crypto", "tcap", "acap", "pcfg", "acfg"))
            for m in self.media)


def sip_summary(msgs):
    return "\n".join(f"    {d} {dst} {m.first}  [{m.sdp().summary() if m.sdp() else 'no SDP'}]"
                     for d, dst, m in msgs)


# ---------------------------------------------------------------------------------------------
# Audio


def write_tone(path, freq, seconds, rate=8000, amplitude=0.5):
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        n = int(seconds * rate)
        w.writeframes(b"".join(
            struct.pack("<h", int(amplitude * 32767 * math.sin(2 * math.pi * freq * k / rate)))
            for k in range(n)))


def read_wav(path):
    """Mono float samples in [-1, 1] and the rate; the first channel of a multi-channel file."""
    try:
        with wave.open(path, "rb") as w:
            rate, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
            raw = w.readframes(n)
    except (EOFError, wave.Error) as e:
        raise Fail(f"a WAV recording at {path}; got an empty or unreadable file ({e}): "
                   "nothing was decoded") from None
    if width != 2:
        raise Fail(f"16-bit WAV at {path}; got {8 * width}-bit")
    samples = struct.unpack("<%dh" % (len(raw) // 2), raw)[::ch]
    return [s / 32768 for s in samples], rate


def goertzel_share(block, rate, freq):
    """Share of the block's energy at `freq` (1.0 = a pure tone), by the Goertzel algorithm."""
    n = len(block)
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + k * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - k * s1 * s2
    energy = sum(x * x for x in block)
    return 0.0 if energy == 0 else min(1.0, 2 * power / (n * energy))


def tone_blocks(path, freq, block_ms=50):
    """Per 50 ms block: (level dBFS, share at freq)."""
    samples, rate = read_wav(path)
    n = rate * block_ms // 1000
    out = []
    for i in range(0, len(samples) - n + 1, n):
        b = samples[i:i + n]
        rms = math.sqrt(sum(x * x for x in b) / n)
        out.append((20 * math.log10(rms) if rms > 0 else -120.0, goertzel_share(b, rate, freq)))
    return out


def tone_report(path, freq):
    """(seconds of tone, total seconds, median dBFS of the tone blocks): a block has the tone
    when it is louder than -30 dBFS and at least 80% of its energy is at `freq`."""
    blocks = tone_blocks(path, freq)
    hits = [lvl for lvl, share in blocks if lvl > -30 and share > 0.8]
    med = sorted(hits)[len(hits) // 2] if hits else -120.0
    return len(hits) * 0.05, len(blocks) * 0.05, med


def expect_tone(path, freq, min_seconds, who):
    if not path or not os.path.exists(path):
        raise Fail(f"{who}: a recording with the {freq} Hz tone; got no WAV file ({path})")
    got, total, level = tone_report(path, freq)
    check(got >= min_seconds,
          f"{who}: at least {min_seconds:.1f} s of a {freq} Hz tone above -30 dBFS in "
          f"{os.path.basename(path)}",
          f"{got:.2f} s of {total:.2f} s (median level {level:.1f} dBFS)")
    return got, level
