"""Configurations and launchers for the SIP peers: baresip, Linphone (linphonec), SIPp, the
GStreamer SRTP endpoint (gst_peer.py) and the GStreamer rtpbin endpoint with RTCP
(gst_rtcp_peer.py)."""
import glob
import json
import os
import socket
import subprocess

from harness import HERE, Fail, wait_until


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


class Baresip:
    """A headless baresip that plays `tone` into every call and writes what it decodes to
    `<dir>/dump/*-dec.wav`. mediaenc: None (plain RTP), "srtp-mand" (RTP/SAVP only) or "srtp"
    (OSRTP best effort). answermode: "auto" (answers at once), "early" (183 with SDP and early
    media, never answers) or "manual" (rings until `command("accept")`, which needs
    `ctrl_port`: the ctrl_tcp module on 127.0.0.1). `cert`: a PEM file with certificate and key
    for SIP over TLS (baresip listens for TLS on sip_port+1). `registrar`: host:port;params of
    the proxy the account registers with (its AOR's domain), e.g.
    "127.0.0.1:5061;transport=tls"; without it, the account does not register. `addr`: the
    loopback address it binds SIP and RTP to (and puts in its SDP)."""

    def __init__(self, workdir, name, sip_port, rtp_lo, tone, mediaenc=None, answermode="auto",
                 ctrl_port=None, cert=None, registrar=None, addr="127.0.0.1"):
        self.dir = os.path.join(workdir, name)
        self.name, self.sip_port, self.ctrl_port, self.addr = name, sip_port, ctrl_port, addr
        # No stdio/cons/http modules: their default listeners bind 0.0.0.0; ctrl_tcp only when
        # asked for, on loopback.
        ctrl = ""
        if ctrl_port:
            ctrl = f"module_app ctrl_tcp.so\nctrl_tcp_listen 127.0.0.1:{ctrl_port}\n"
        if cert:
            ctrl += f"sip_certificate {cert}\n"
        write(os.path.join(self.dir, "config"), f"""poll_method epoll
sip_listen {addr}:{sip_port}
net_interface {addr}
audio_player alsa,null
audio_source aufile,{tone}
audio_alert alsa,null
rtp_ports {rtp_lo}-{rtp_lo + 9}
rtcp_mux no
module_path /usr/lib/baresip/modules
module g711.so
module alsa.so
module aufile.so
module srtp.so
module sndfile.so
module_tmp uuid.so
module_tmp account.so
module_app menu.so
{ctrl}snd_path {self.dir}/dump
""")
        enc = f";mediaenc={mediaenc}" if mediaenc else ""
        aor = (f"<sip:{name}@{registrar}>;regint=600" if registrar
               else f"<sip:{name}@{addr}:{sip_port}>;regint=0")
        write(os.path.join(self.dir, "accounts"),
              f"{aor};answermode={answermode};audio_codecs=PCMU{enc}\n")
        os.makedirs(os.path.join(self.dir, "dump"), exist_ok=True)

    def start(self, procs, seconds, dial=None):
        argv = ["baresip", "-f", self.dir, "-s", "-t", str(seconds)]
        if dial:
            argv += ["-e", f"/dial {dial}"]
        self.proc = procs.start(self.name, argv)
        return self.proc

    def wait_bound(self):
        wait_until(f"{self.name} to listen on {self.addr}:{self.sip_port}",
                   lambda: port_bound(self.sip_port, self.addr), 10)

    def command(self, command, params=""):
        """Runs a menu command (`accept`, `hangup`, `dial` with the URI as `params`) through
        ctrl_tcp: a JSON netstring; returns baresip's response."""
        body = json.dumps({"command": command, "params": params, "token": command}).encode()
        s = wait_until(f"{self.name}'s ctrl_tcp to accept a connection", self.connect, 10, 0.1)
        with s:
            s.sendall(b"%d:%s," % (len(body), body))
            data = b""
            while b'"response"' not in data:
                chunk = s.recv(4096)
                if not chunk:
                    raise Fail(f"{self.name}: a response to '{command}'; the connection closed")
                data += chunk
        return data.decode(errors="replace")

    def connect(self):
        try:
            return socket.create_connection(("127.0.0.1", self.ctrl_port), timeout=3)
        except OSError:
            return None

    def decoded_wavs(self):
        return sorted(glob.glob(os.path.join(self.dir, "dump", "*-dec.wav")))

    def decoded_wav(self):
        files = self.decoded_wavs()
        return files[-1] if files else None

    def log(self):
        return open(self.proc.logpath, errors="replace").read()


def port_bound(port, addr="127.0.0.1"):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((addr, port))
        return False
    except OSError:
        return True
    finally:
        s.close()


class Linphone:
    """linphonec driven through its stdin. It needs a writable HOME (its database), the SIP port
    and IPv6 set at run time, and the 'files' sound card."""

    def __init__(self, workdir, name, sip_port, rtp_port, keep_srtp_keys=True,
                 suites="AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32"):
        self.dir = os.path.join(workdir, name)
        self.name, self.sip_port = name, sip_port
        os.makedirs(os.path.join(self.dir, "home", ".local", "share", "linphone"), exist_ok=True)
        keep = "" if keep_srtp_keys else "keep_srtp_keys=0\n"
        write(os.path.join(self.dir, "linphonerc"), f"""[sip]
sip_port={sip_port}
sip_tcp_port=-1
sip_tls_port=-1
media_encryption=srtp
media_encryption_mandatory=0
support_capability_negotiations=1
capability_negotiations_reinvite=1
srtp_crypto_suites={suites}
{keep}default_proxy=-1
guess_hostname=0
contact=sip:{name}@127.0.0.1
[rtp]
bind_address=127.0.0.1
audio_rtp_port={rtp_port}
video_rtp_port={rtp_port + 2}
[net]
firewall_policy=0
ipv6=0
[video]
enabled=0
capture=0
display=0
""")

    def start(self, procs):
        self.proc = procs.start(
            self.name,
            ["linphonec", "-c", os.path.join(self.dir, "linphonerc"), "-d", "6",
             "-l", os.path.join(self.dir, "linphone.log")],
            env={"HOME": os.path.join(self.dir, "home")}, stdin=subprocess.PIPE)
        self.send("ports sip %d" % self.sip_port)
        self.send("ipv6 disable")
        self.send("soundcard use files")
        wait_until(f"{self.name} to listen on {self.sip_port}", lambda: port_bound(self.sip_port), 15)
        return self.proc

    def send(self, line):
        if self.proc.poll() is not None:
            raise Fail(f"{self.name} running to take '{line}'; it exited with {self.proc.returncode}")
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def output(self):
        return open(self.proc.logpath, errors="replace").read()

    def wait_output(self, text, timeout, start=0):
        """Waits for `text` in linphonec's console output after offset `start`."""
        return wait_until(f"{self.name} to print '{text}'",
                          lambda: text in self.output()[start:], timeout, 0.1)

    def quit(self, procs):
        try:
            self.send("quit")
            procs.wait(self.proc, 10)
        except (Fail, BrokenPipeError):
            pass


def gst_peer(procs, name, port, remote_port, tx, rx, freq, seconds, wav):
    """A GStreamer SRTP endpoint on one UDP socket (srtpenc out, srtpdec in): tx/rx are
    (suite '80'|'32'|'256_80'|'256_32'|'gcm128'|'gcm256', key||salt of its length, ssrc)."""
    return procs.start(name, [
        "/usr/bin/python3", os.path.join(HERE, "gst_peer.py"),
        "--port", str(port), "--remote-port", str(remote_port),
        "--tx-suite", tx[0], "--tx-key", tx[1].hex(), "--tx-ssrc", str(tx[2]),
        "--rx-suite", rx[0], "--rx-key", rx[1].hex(), "--rx-ssrc", str(rx[2]),
        "--freq", str(freq), "--seconds", str(seconds), "--wav", wav])


def gst_rtcp_peer(procs, name, port, remote_port, ssrc, freq, seconds, wav, drop_every=0):
    """A GStreamer rtpbin endpoint (gst_rtcp_peer.py): plain RTP on `port` and RTCP on port+1
    to the relay's `remote_port` (and +1), with rtpbin's own sender and receiver reports;
    `drop_every` N drops every Nth RTP packet it sends."""
    return procs.start(name, [
        "/usr/bin/python3", os.path.join(HERE, "gst_rtcp_peer.py"),
        "--port", str(port), "--remote-port", str(remote_port), "--ssrc", str(ssrc),
        "--freq", str(freq), "--seconds", str(seconds), "--wav", wav,
        "--drop-every", str(drop_every)])


def sipp(procs, name, scenario, remote, local_port, calls=1, service="x", extra=()):
    """SIPp on 127.0.0.1:local_port running `scenario` (an XML file), tracing every message."""
    d = os.path.dirname(scenario)
    argv = ["sipp", "-sf", scenario, "-i", "127.0.0.1", "-p", str(local_port), "-m", str(calls),
            "-s", service, "-trace_msg", "-message_file", os.path.join(d, f"{name}-msgs.log"),
            "-trace_err", "-error_file", os.path.join(d, f"{name}-errors.log"),
            "-nostdin", "-timeout", "20s", "-timeout_error", *extra]
    if remote:
        argv.insert(1, remote)
    return procs.start(name, argv)
