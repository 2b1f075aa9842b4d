"""Exact SDP offers that real phones send, one SIPp call each through the lab Kamailio."""
import os

from harness import check, wait_until

from .common import KEY_A, KEY_B, PLAIN_OFFER, RELAY_CONFIG, SUITE, capneg_leaks, find, must, sipp_case


# ---------------------------------------------------------------------------------------------
# 6. SIPp: exact SDP offers that real phones send


# Worked example E10: baresip's OSRTP offer (RTP/AVP with a=crypto).
OSRTP_OFFER = f"""v=0
o=- 3811448773 713579517 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {{port}} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=fmtp:101 0-15
a=sendrecv
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_A}
a=ptime:20"""

# A phone that knows nothing of SRTP: plain RTP/AVP answer, no crypto, no acfg.
PLAIN_ANSWER = """v=0
o=uas 2000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/AVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=sendrecv"""

# Worked example E8: SRTP audio and plain video in one SDP (a video phone such as Radvision).
TWO_MLINE_OFFER = """v=0
o=alice 5000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {port} RTP/SAVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:6nN1J3NtHzq4nKI/4z2z+XrcX6NPl9gPuPCv5kRb
a=sendrecv
m=video {port2} RTP/AVP 96
a=rtpmap:96 H264/90000
a=fmtp:96 profile-level-id=42e01f;packetization-mode=1
a=sendrecv"""

# The callee takes the relay's cap-neg SRTP for audio (RFC 5939: RTP/SAVP, its own key, acfg)
# and keeps the video plain.
TWO_MLINE_ANSWER = f"""v=0
o=uas 2000 1 IN IP4 127.0.0.1
s=-
c=IN IP4 127.0.0.1
t=0 0
m=audio {{port}} RTP/SAVP 0 101
a=rtpmap:0 PCMU/8000
a=rtpmap:101 telephone-event/8000
a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{KEY_B}
a=acfg:1 t=1 a=1
a=sendrecv
m=video {{port2}} RTP/AVP 96
a=rtpmap:96 H264/90000
a=sendrecv"""


def sipp_offers(ctx):
    """Three offers real phones send, through Kamailio and the relay to a SIPp UAS."""
    relay = ctx.start_relay(config=RELAY_CONFIG)
    kam = ctx.start_kamailio()
    b = ctx.base
    uas_port = b + 24

    # OSRTP (RFC 8643) from a best-effort caller to a plain callee: the caller must get an
    # RTP/AVP answer with one a=crypto (never RTP/SAVP), the callee the relay's own cap-neg
    # offer, and the relay transcodes.
    msgs, q = sipp_case(ctx, kam, "osrtp", "osrtp", f"besteffort-{uas_port}-uas", OSRTP_OFFER,
                        PLAIN_ANSWER, 200, b + 20, uas_port)
    to_uas = must(find(msgs, "out", dst=f"127.0.0.1:{uas_port}", method="INVITE"),
                  "osrtp: INVITE to the UAS").sdp()
    to_uac = must(find(msgs, "out", dst=f"127.0.0.1:{b + 20}", status=200), "osrtp: 200 OK to the UAC").sdp()
    check(to_uas.media[0]["proto"] == "RTP/AVP" and not to_uas.crypto(0) and to_uas.attrs(0, "pcfg")
          and to_uas.attrs(0, "tcap") == ["tcap:1 RTP/SAVP"] and KEY_A not in to_uas.text,
          "osrtp: the callee offered RTP/AVP with the relay's tcap/acap/pcfg, no a=crypto, "
          "not the caller's key",
          to_uas.summary())
    got = to_uac.crypto(0)
    check(to_uac.media[0]["proto"] == "RTP/AVP" and len(got) == 1 and got[0][:2] == ("1", SUITE["80"])
          and got[0][2] != KEY_A and not capneg_leaks(to_uac),
          "osrtp: answer RTP/AVP with exactly a=crypto:1 AES_CM_128_HMAC_SHA1_80 and the relay's key",
          to_uac.summary())
    st = q["streams"][0]
    check((st["from-A"], st["from-B"]) == ("decrypt", "encrypt"),
          "osrtp: SRTP from the caller decrypted, plain from the callee encrypted", st)

    # Two m-lines: SRTP audio and plain video. Audio stays SRTP on both legs, video plain, each
    # m-line decided on its own.
    msgs, q = sipp_case(ctx, kam, "two-mlines", "video", f"besteffort-{uas_port}-uas",
                        TWO_MLINE_OFFER, TWO_MLINE_ANSWER, 200, b + 26, uas_port)
    to_uas = must(find(msgs, "out", dst=f"127.0.0.1:{uas_port}", method="INVITE"),
                  "two-mlines: INVITE to the UAS").sdp()
    to_uac = must(find(msgs, "out", dst=f"127.0.0.1:{b + 26}", status=200),
                  "two-mlines: 200 OK to the UAC").sdp()
    check(len(to_uas.media) == 2 and ("acap:1 crypto:1 " + SUITE["80"]) in " ".join(to_uas.media[0]["attrs"]),
          "two-mlines: the callee offered audio with a=acap:1 crypto:1 AES_CM_128_HMAC_SHA1_80 "
          "and a video m-line",
          to_uas.summary())
    check(len(to_uac.media) == 2
          and to_uac.media[0]["proto"] == "RTP/SAVP" and len(to_uac.crypto(0)) == 1
          and to_uac.crypto(0)[0][:2] == ("1", SUITE["80"])
          and to_uac.media[1]["proto"] == "RTP/AVP" and not to_uac.crypto(1) and to_uac.media[1]["port"] != 0
          and not capneg_leaks(to_uac) and KEY_B not in to_uac.text,
          "two-mlines: answer audio RTP/SAVP with one a=crypto:1 (relay key), "
          "video RTP/AVP plain on a live port",
          to_uac.summary())
    audio, video = q["streams"]
    check((audio["from-A"], audio["from-B"], video["from-A"], video["from-B"])
          == ("decrypt+encrypt", "decrypt+encrypt", "plain", "plain"),
          "two-mlines: audio decrypt+encrypt both ways, video plain both ways", q["streams"])

    # Enforce: a plain offer from an extension the relay's config puts under enforce. The relay
    # refuses it and Kamailio turns that into 488; the callee never sees the call.
    msgs, _ = sipp_case(ctx, kam, "enforce-488", "enforced", f"besteffort-{uas_port}-uas", PLAIN_OFFER,
                        None, 488, b + 28, uas_port)
    check(not find(msgs, "out", dst=f"127.0.0.1:{uas_port}", method="INVITE"),
          "enforce-488: no INVITE to the callee", "one was forwarded")
    # Kamailio's stateless 488 does not pass its onsend_route; SIPp's own trace shows it.
    trace = open(os.path.join(ctx.workdir, "enforce-488", "enforce-488-uac-msgs.log")).read()
    check("SIP/2.0 488 Not Acceptable Here" in trace, "enforce-488: the caller to receive 488",
          [line for line in trace.splitlines() if line.startswith("SIP/2.0")])
    log = open(relay.proc.logpath).read()
    want = "media security enforce: m-line 0 (audio): offer has no usable SRTP"
    check(want in log, f"enforce-488: the relay's reason '{want}'",
          [line for line in log.splitlines() if 'result="error"' in line])
    wait_until("no call left at the relay", lambda: relay.cmd({"command": "list"}).get("calls") == [], 5)
    return "OSRTP answered RTP/AVP+crypto, audio SRTP + video plain, enforce refusal became 488"
