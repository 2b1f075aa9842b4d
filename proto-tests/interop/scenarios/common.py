"""What the scenario modules share: the context each scenario runs in, finding SIP messages in
Kamailio's trace, checks on the SDPs the relay wrote and on the relay itself, the SRTP suites and
keys the scripted phones use, and the SIPp scripting of the one-shot calls and of the dialogs."""
import os

from harness import Fail, Kamailio, Relay, check, sip_summary, wait_until, write_tone
from peers import port_bound, sipp, write


class Ctx:
    def __init__(self, relay_bin, workdir, procs, base):
        self.relay_bin, self.workdir, self.procs, self.base = relay_bin, workdir, procs, base
        self.relay = self.kamailio = None
        self.relays = []

    def start_relay(self, base=None, **kw):
        """A relay with ng on `base` (default the scenario's base), metrics on base+1."""
        relay = Relay(self.procs, self.relay_bin, self.base if base is None else base, **kw)
        self.relays.append(relay)
        self.relay = self.relay or relay
        return relay

    def start_kamailio(self, cfg="kamailio.cfg", ng_ports=None, local=None):
        """Kamailio on base+10 (UDP; with cfg "deploy", deploy/kamailio/kamailio.cfg, TLS on
        base+11), its rtpengine set the relay(s) on `ng_ports` (default the scenario's relay)."""
        self.kamailio = Kamailio(self.procs, self.base + 10, ng_ports or [self.base], cfg, local)
        return self.kamailio

    def tone(self, freq, seconds=30):
        path = os.path.join(self.workdir, f"tone{freq}.wav")
        if not os.path.exists(path):
            write_tone(path, freq, seconds)
        return path

    def diagnostics(self):
        """What a failure prints besides its message: the SIP messages the proxy saw and the
        relay's log lines for the calls."""
        out = []
        if self.kamailio:
            try:
                msgs = self.kamailio.messages()
                if msgs:
                    out.append("SIP through Kamailio (direction, peer, first line, SDP security):")
                    out += sip_summary(msgs).splitlines()
            except OSError:
                pass
        for relay in self.relays:
            alive = relay.proc.poll() is None
            st = relay.try_cmd({"command": "statistics"}) if alive else None
            if st:
                nonzero = {k: v for k, v in st.get("drops", {}).items() if v}
                out.append(f"{relay.name} now: {st.get('calls')} call(s), packets "
                           f"{st.get('packets')}, drops {nonzero}")
            elif not alive:
                out.append(f"{relay.name}: exited with {relay.proc.returncode}")
            ids = relay.call_ids()
            out.append(f"{relay.name} log for call(s) {', '.join(ids) or '(none)'}:")
            out += ["  " + line for line in relay.log_for(ids)]
        out.append(f"work directory: {self.workdir}")
        return out


class Scenario:
    def __init__(self, name, run, timeout):
        self.name, self.run, self.timeout = name, run, timeout


# ---------------------------------------------------------------------------------------------
# SIP messages as Kamailio logged them: (direction, peer, message)


def one_call(msgs, call_id=None):
    """The messages of one call (the first one seen, or `call_id`)."""
    if not msgs:
        return []
    cid = call_id or msgs[0][2].call_id
    return [m for m in msgs if m[2].call_id == cid]


def find(msgs, direction, dst=None, method=None, status=None, with_sdp=True, nth=0):
    """The nth message the proxy received ('in', from dst) or sent ('out', to dst)."""
    hits = [m for d, peer, m in msgs
            if d == direction and (dst is None or peer == dst)
            and (method is None or m.method == method)
            and (status is None or m.status == status)
            and (m.is_request if status is None else True)
            and (not with_sdp or m.sdp())]
    if status is None:
        hits = [m for m in hits if m.is_request]
    return hits[nth] if len(hits) > nth else None


def must(msg, what):
    if msg is None:
        raise Fail(f"{what}; it never came")
    return msg


def wait_sip(kam, what, timeout=8, **kw):
    """Waits until Kamailio has logged the message `find(msgs, **kw)` picks, and returns it."""
    return wait_until(what, lambda: find(kam.messages(), **kw), timeout)


# ---------------------------------------------------------------------------------------------
# What the relay wrote and did


def expect_leg(sdp, who, proto, crypto, ctx):
    """An SDP the relay wrote: media on a relay port, `proto`, and a=crypto or not."""
    m = sdp.media[0]
    lo = ctx.base + 100
    check(m["proto"] == proto and bool(sdp.crypto(0)) == crypto and lo <= m["port"] < lo + 100
          and "c=IN IP4 127.0.0.1" in sdp.text
          and not any(sdp.attrs(0, a) for a in ("tcap", "acap", "pcfg")),
          f"{who}: {proto} {'with' if crypto else 'without'} a=crypto (no cap-neg) on a relay port "
          f"({lo}-{lo + 99})", sdp.summary())


def expect_relay_clean(ctx, relay, ended_before_bye=False):
    """The ng commands from Kamailio all succeeded, and after the BYE the call and its ports are
    gone. `ended_before_bye`: the relay ended the call itself (a timeout), so the `$rtpstat`
    query Kamailio sends at the BYE rightly finds no call."""
    log = open(relay.proc.logpath).read()
    for cmd in ("offer", "answer", "delete"):
        check(f'command="{cmd}"' in log, f"the relay to log an ng {cmd} from Kamailio", "none")
    errors = [line for line in log.splitlines() if 'result="error"' in line
              and not (ended_before_bye and 'command="query"' in line
                       and 'reason="unknown call-id"' in line)]
    check(not errors, "no ng command to fail", errors[:3])
    wait_until("the relay to list no call after the BYE",
               lambda: relay.cmd({"command": "list"}).get("calls") == [], 5)
    wait_until("every port pair to be back in the pool",
               lambda: relay.cmd({"command": "statistics"})["free-port-pairs"] == ctx.free0, 5)


def drops(m):
    return {k.split('reason="')[1].rstrip('"}'): int(v) for k, v in m.items()
            if k.startswith("srtp_relay_drops_total") and v}


def capneg_leaks(sdp):
    """Cap-neg or DTLS/ZRTP attributes in an SDP the relay wrote (they must never cross)."""
    return [a for m in sdp.media for a in m["attrs"]
            if a.split(":")[0] in ("tcap", "acap", "pcfg", "acfg", "fingerprint", "setup", "zrtp-hash")]


# ---------------------------------------------------------------------------------------------
# SRTP suites, and the SDES keys (key||salt, base64) of the scripted phones


SUITE = {"80": "AES_CM_128_HMAC_SHA1_80", "32": "AES_CM_128_HMAC_SHA1_32",
         "256_80": "AES_256_CM_HMAC_SHA1_80", "256_32": "AES_256_CM_HMAC_SHA1_32",
         "gcm128": "AEAD_AES_128_GCM", "gcm256": "AEAD_AES_256_GCM"}
# key || salt bytes per suite (RFC 4568, RFC 6188, RFC 7714)
KEY_LEN = {"80": 30, "32": 30, "256_80": 46, "256_32": 46, "gcm128": 28, "gcm256": 44}
ALL_SUITES = ["AEAD_AES_256_GCM", "AEAD_AES_128_GCM", "AES_256_CM_HMAC_SHA1_80",
              "AES_256_CM_HMAC_SHA1_32", "AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32"]
KEY_A = "MI1fKA4carK9sRbo1RitHcXoYTHf6N76t1B9OEQq"
KEY_B = "a5IF5WLbh0edJdTwaMCa9Vy51NXJqhFv0kmADn1e"
KEY_C = "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNk"


# ---------------------------------------------------------------------------------------------
# One SIPp call, UAC to UAS through Kamailio, with a fixed offer and answer
# (sipp-real-phone-offers, deploy-kamailio-refused-media)


UAC_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uac">
  <send retrans="500"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="{status}" rrs="true"/>
{after}
</scenario>
"""

UAC_ACK_BYE = """  <send><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <pause milliseconds="1500"/>
  <send retrans="500"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
[routes]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: <sip:{user}@[local_ip]:[local_port]>
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" crlf="true"/>"""

# A non-2xx final response is acknowledged in the same transaction (RFC 3261 §17.1.1.3).
UAC_ACK_REJECT = """  <send><![CDATA[
ACK sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch-1]
From: {user} <sip:{user}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
[last_To:]
Call-ID: [call_id]
CSeq: 1 ACK
Max-Forwards: 70
Content-Length: 0

]]></send>"""

UAS_XML = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="uas">
  <recv request="INVITE" crlf="true"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]SIPpTag01[call_number]
[last_Call-ID:]
[last_CSeq:]
[last_Record-Route:]
Contact: <sip:uas@[local_ip]:[local_port]>
Content-Type: application/sdp
Content-Length: [len]

{sdp}
]]></send>
  <recv request="ACK" crlf="true"/>
  <recv request="BYE"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
</scenario>
"""


# Worked example E7: a legacy phone's plain offer.
PLAIN_OFFER = """v=0
o=legacy 4000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0 8 101
a=rtpmap:0 PCMU/8000
a=rtpmap:8 PCMA/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv"""

RELAY_CONFIG = """[security]
system = "best-effort"

[extensions."enforced"]
security = "enforce"
"""


def sipp_case(ctx, kam, name, user, service, offer, answer, status, uac_port, uas_port):
    """Runs one SIPp call through Kamailio: UAC (From `user`) -> `service` -> SIPp UAS. Returns
    the call's SIP messages and the relay's `query` taken while the call was up."""
    d = os.path.join(ctx.workdir, name)
    media = ctx.base + 50
    after = UAC_ACK_BYE if status == 200 else UAC_ACK_REJECT
    write(os.path.join(d, "uac.xml"), UAC_XML.format(
        user=user, status=status, sdp=offer.format(port=media, port2=media + 2),
        after=after.format(user=user)))
    uas = None
    if answer:
        sdp = answer.format(port=media + 10, port2=media + 12)
        write(os.path.join(d, "uas.xml"), UAS_XML.format(sdp=sdp))
        uas = sipp(ctx.procs, f"{name}-uas", os.path.join(d, "uas.xml"), None, uas_port)
        wait_until(f"{name}: SIPp UAS to listen", lambda: port_bound(uas_port), 5)
    uac = sipp(ctx.procs, f"{name}-uac", os.path.join(d, "uac.xml"), f"127.0.0.1:{kam.port}", uac_port,
               service=service)
    query = None
    if status == 200:
        def answered():
            for cid in ctx.relay.cmd({"command": "list"}).get("calls", []):
                q = ctx.relay.cmd({"command": "query", "call-id": cid})
                if q.get("to-tag"):
                    return q
        query = wait_until(f"{name}: the call to be answered at the relay", answered, 8)
    rc = ctx.procs.wait(uac, 15)
    errors = os.path.join(d, f"{name}-uac-errors.log")
    errors = open(errors).read()[-400:] if os.path.exists(errors) else ""
    check(rc == 0, f"{name}: SIPp UAC to complete its scenario (exit 0)", f"exit {rc}: {errors}")
    if uas:
        rc = ctx.procs.wait(uas, 10)
        check(rc == 0, f"{name}: SIPp UAS to complete its scenario (exit 0)", f"exit {rc}")
    msgs = [m for m in kam.messages() if "SIPpTag00" in m[2].headers.get("from", "")
            and m[2].headers.get("from", "").startswith(user)]
    return msgs, query


# ---------------------------------------------------------------------------------------------
# SIPp for the dialog scenarios: SIPp signals, Endpoints (media.py) on the SDPs' ports carry the
# media. The caller is the UAC (From "caller"), the callee the UAS; each keeps the other's
# From/To header (with its tag) in a variable for its requests within the dialog.


def sipp_xml(name, *steps):
    return ('<?xml version="1.0" encoding="ISO-8859-1" ?>\n<!DOCTYPE scenario SYSTEM "sipp.dtd">\n'
            f'<scenario name="{name}">\n' + "\n".join(steps) + "\n</scenario>\n")


def sipp_send(*lines, sdp=None, retrans=False):
    """A message: its start line and headers, then `sdp` as the body (or none)."""
    body = ["Content-Length: 0", ""] if sdp is None else [
        "Content-Type: application/sdp", "Content-Length: [len]", "", sdp]
    attr = ' retrans="500"' if retrans else ""
    return f"  <send{attr}><![CDATA[\n" + "\n".join(list(lines) + body) + "\n]]></send>"


def sipp_recv(what, optional=False, keep=None):
    """Waits for a response ('183') or a request ('INVITE'). `keep` = (header, variable): store
    that header of it, and take the dialog's route set and remote target from it."""
    attr = f'response="{what}"' if what.isdigit() else f'request="{what}"'
    if optional:
        return f'  <recv {attr} optional="true"/>'
    if not keep:
        return f"  <recv {attr}/>"
    return (f'  <recv {attr} rrs="true"><action><ereg regexp=".*" search_in="hdr" '
            f'header="{keep[0]}:" assign_to="{keep[1]}"/></action></recv>')


def sipp_pause(ms):
    return f'  <pause milliseconds="{ms}"/>'


CALLER_FROM = "From: <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]"
CALLEE_FROM = "From: <sip:callee@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]"


def caller_invite(sdp):
    """The caller's INVITE to the proxy's [service] (the R-URI user Kamailio routes on), and
    the 100 Trying it may get."""
    return sipp_send(
        "INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]", CALLER_FROM,
        "To: <sip:[service]@[remote_ip]:[remote_port]>", "Call-ID: [call_id]", "CSeq: 1 INVITE",
        "Contact: <sip:caller@[local_ip]:[local_port]>", "Max-Forwards: 70",
        sdp=sdp, retrans=True) + "\n" + sipp_recv("100", optional=True)


def in_dialog(method, cseq, who, sdp=None):
    """A request within the dialog from `who` ("caller": To is $callee; "callee": To is
    $caller), to the remote target along the route set."""
    mine, theirs = (CALLER_FROM, "callee") if who == "caller" else (CALLEE_FROM, "caller")
    return sipp_send(
        f"{method} [next_url] SIP/2.0",
        "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]", mine,
        f"To:[${theirs}]", "[routes]", "Call-ID: [call_id]", f"CSeq: {cseq} {method}",
        f"Contact: <sip:{who}@[local_ip]:[local_port]>", "Max-Forwards: 70",
        sdp=sdp, retrans=method != "ACK")


def reply(status, who, sdp=None, first=False):
    """A response to the last request; `first`: the callee's to the INVITE (its tag and the
    Record-Route)."""
    to = "[last_To:];tag=[pid]SIPpTag01[call_number]" if first else "[last_To:]"
    lines = [f"SIP/2.0 {status}", "[last_Via:]", "[last_From:]", to, "[last_Call-ID:]",
             "[last_CSeq:]"]
    if first:
        lines.append("[last_Record-Route:]")
    return sipp_send(*lines, f"Contact: <sip:{who}@[local_ip]:[local_port]>", sdp=sdp)


def caller_answered(talk_ms, ack_sdp=None):
    """The caller takes the 200 OK, ACKs it (with `ack_sdp`: the answer to a delayed offer),
    talks for `talk_ms`, hangs up."""
    return [sipp_recv("200", keep=("To", "callee")), in_dialog("ACK", 1, "caller", ack_sdp),
            sipp_pause(talk_ms), in_dialog("BYE", 2, "caller"), sipp_recv("200")]


CALLEE_INVITED = sipp_recv("INVITE")
CALLEE_BYE = [sipp_recv("ACK"), sipp_recv("BYE"), reply("200 OK", "callee")]


def sdp_audio(who, port, key=None, version=1, extra=(), codec=(0, "PCMU/8000")):
    """A phone's audio SDP: one codec (PCMU), RTP/SAVP with one AES_CM_128_HMAC_SHA1_80 key,
    or RTP/AVP."""
    lines = ["v=0", f"o={who} 1000 {version} IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1",
             "t=0 0", f"m=audio {port} {'RTP/SAVP' if key else 'RTP/AVP'} {codec[0]}",
             f"a=rtpmap:{codec[0]} {codec[1]}"]
    if key:
        lines.append(f"a=crypto:1 {SUITE['80']} inline:{key}")
    return "\n".join(lines + list(extra) + ["a=sendrecv"])


def sipp_dialog(ctx, kam, name, policy, caller_steps, callee_steps, n=0):
    """Starts SIPp as callee (UAS) and caller (UAC) for call `n` of a scenario, through
    Kamailio to sip:<policy>-<callee port>-callee: caller on base+20+10n, callee on
    base+22+10n (SIPp's own media sockets on base+70+10n..+76, unused but by
    play_pcap_audio, which sends from the caller's). Returns the two processes and their
    addresses as Kamailio logs them."""
    d = os.path.join(ctx.workdir, name)
    uac, uas = ctx.base + 20 + 10 * n, ctx.base + 22 + 10 * n
    write(os.path.join(d, "uac.xml"), sipp_xml("caller", *caller_steps))
    write(os.path.join(d, "uas.xml"), sipp_xml("callee", *callee_steps))
    callee = sipp(ctx.procs, f"{name}-uas", os.path.join(d, "uas.xml"), None, uas,
                  extra=("-mp", str(ctx.base + 74 + 10 * n)))
    wait_until(f"{name}: SIPp callee to listen", lambda: port_bound(uas), 5)
    caller = sipp(ctx.procs, f"{name}-uac", os.path.join(d, "uac.xml"), f"127.0.0.1:{kam.port}",
                  uac, service=f"{policy}-{uas}-callee", extra=("-mp", str(ctx.base + 70 + 10 * n)))
    return caller, callee, f"127.0.0.1:{uac}", f"127.0.0.1:{uas}"


def sipp_done(ctx, name, *procs):
    for p in procs:
        rc = ctx.procs.wait(p, 20)
        path = os.path.join(ctx.workdir, name, f"{p.name}-errors.log")
        errors = open(path).read()[-400:] if os.path.exists(path) else ""
        check(rc == 0, f"{p.name}: SIPp to complete its scenario (exit 0)", f"exit {rc}: {errors}")


def relay_crypto(sdp, tag="1"):
    """(suite, key) of the relay's a=crypto (or cap-neg a=acap) line `tag` in an SDP it wrote."""
    for t, suite, key in sdp.crypto(0) + sdp.acap_crypto(0):
        if t == tag:
            return suite, key
    raise Fail(f"a crypto line with tag {tag} in the relay's SDP; got {sdp.summary()}")
