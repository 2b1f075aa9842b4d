"""GStreamer endpoints with the relay driven over ng directly (no SIP): SRTP with known keys in
every suite, and call quality from real RTCP (rtpbin) in `delete`."""
import base64
import os
import re

from harness import Sdp, check, counter, expect_tone
from peers import gst_peer, gst_rtcp_peer

from .common import ALL_SUITES, KEY_LEN, SUITE, drops


# ---------------------------------------------------------------------------------------------
# 5. GStreamer srtpenc/srtpdec with known keys, both suites, driven over ng directly


def plain_sdp(port, proto, crypto=(), extra=()):
    lines = ["v=0", "o=gst 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio {port} {proto} 0", "a=rtpmap:0 PCMU/8000"]
    lines += [f"a=crypto:{t} {s} inline:{base64.b64encode(k).decode()}" for t, s, k in crypto]
    lines += list(extra) + ["a=sendrecv", ""]
    return "\r\n".join(lines)


def gstreamer_srtp(ctx):
    """Two calls, each with an SRTP GStreamer endpoint on both legs and the suites crossed:
    A _80 / B _32, then A _32 / B _80. Each endpoint encrypts with its own known key (the one in
    its SDP) and decrypts with the key the relay gave it; the tone must arrive both ways."""
    relay = ctx.start_relay()
    return gst_srtp_calls(ctx, relay, (("80", "32", 440, 660), ("32", "80", 520, 780)))


def gstreamer_srtp_new_suites(ctx):
    """The suites of RFC 6188 and RFC 7714 with libsrtp inside GStreamer on both ends, the relay
    configured with all six: A on AES-128-GCM and B on AES-256-CM _80, A on AES-256-CM _32 and
    B on AES-256-GCM, A on AES-256-GCM and B on _80. Each leg keeps its own suite; the tone
    must arrive both ways."""
    config = "[security]\nsuites = [" + ", ".join(f'"{s}"' for s in ALL_SUITES) + "]\n"
    relay = ctx.start_relay(config=config)
    return gst_srtp_calls(ctx, relay, (("gcm128", "256_80", 440, 660),
                                       ("256_32", "gcm256", 520, 780),
                                       ("gcm256", "80", 600, 900)))


def gst_srtp_calls(ctx, relay, calls):
    """One call per (A's suite, B's suite, A's tone, B's tone), all at once."""
    b = ctx.base
    peers, expect = [], []
    for n, (sa, sb, fa, fb) in enumerate(calls):
        call = f"gst-{sa}-{sb}"
        ka, kb = os.urandom(KEY_LEN[sa]), os.urandom(KEY_LEN[sb])
        pa, pb = b + 20 + 4 * n, b + 22 + 4 * n
        ssrc_a, ssrc_b = 0x11110000 + n, 0x22220000 + n
        r = relay.cmd({"command": "offer", "call-id": call, "from-tag": "a", "sdp":
                       plain_sdp(pa, "RTP/SAVP", [(1, SUITE[sa], ka)]),
                       "to-media-security": "enforce"})
        check(r.get("result") == "ok", f"{call}: the offer accepted", r)
        offer_b = Sdp(r["sdp"])
        pick = [c for c in offer_b.crypto(0) if c[1] == SUITE[sb]]
        check(offer_b.media[0]["proto"] == "RTP/SAVP" and pick,
              f"{call}: an RTP/SAVP offer to B with a {SUITE[sb]} line", offer_b.summary())
        tag_b, _, relay_key_b = pick[0]
        r = relay.cmd({"command": "answer", "call-id": call, "from-tag": "a", "to-tag": "b", "sdp":
                       plain_sdp(pb, "RTP/SAVP", [(tag_b, SUITE[sb], kb)])})
        check(r.get("result") == "ok", f"{call}: the answer accepted", r)
        ans_a = Sdp(r["sdp"])
        check(ans_a.media[0]["proto"] == "RTP/SAVP" and len(ans_a.crypto(0)) == 1
              and ans_a.crypto(0)[0][:2] == ("1", SUITE[sa]),
              f"{call}: an answer to A with one a=crypto:1 {SUITE[sa]}", ans_a.summary())
        relay_key_a = base64.b64decode(ans_a.crypto(0)[0][2])
        relay_key_b = base64.b64decode(relay_key_b)
        wav_a, wav_b = (os.path.join(ctx.workdir, f"{call}-{x}.wav") for x in "ab")
        peers.append(gst_peer(ctx.procs, f"gst-{call}-a", pa, offer_b_port(ans_a), (sa, ka, ssrc_a),
                              (sa, relay_key_a, ssrc_b), fa, 4, wav_a))
        peers.append(gst_peer(ctx.procs, f"gst-{call}-b", pb, offer_b_port(offer_b), (sb, kb, ssrc_b),
                              (sb, relay_key_b, ssrc_a), fb, 4, wav_b))
        expect += [(wav_a, fb, f"{call} A (srtpdec {sa})"), (wav_b, fa, f"{call} B (srtpdec {sb})")]
    for p in peers:
        rc = ctx.procs.wait(p, 15)
        check(rc == 0, f"{p.name} to exit 0", f"{rc}: {open(p.logpath).read()[-500:]}")
    heard = [expect_tone(path, freq, 3.0, who)[0] for path, freq, who in expect]
    m = relay.metrics()
    fwd = counter(m, "srtp_relay_packets_total", direction="out", transform="decrypt+encrypt")
    d = drops(m)
    streams = 2 * len(calls)
    check(fwd >= streams * 180,
          f"at least {streams * 180} packets decrypted and re-encrypted ({streams} streams of 200)", fwd)
    check(not d.get("auth_failed") and not d.get("replayed"), "no authentication failure or replay", d)
    pairs = ", ".join(f"{SUITE[sa]}/{SUITE[sb]}" for sa, sb, _, _ in calls)
    return (f"suites crossed both ways ({pairs}), {int(fwd)} packets, "
            f"tone {min(heard):.1f}-{max(heard):.1f} s per stream")


def offer_b_port(sdp):
    return sdp.media[0]["port"]


# ---------------------------------------------------------------------------------------------
# 16. Call quality from real RTCP: GStreamer rtpbin endpoints, one of which loses packets on
# purpose; the receiver's reports reach the relay, and `delete` reports the loss per SSRC.

# Every 20th RTP packet from A is dropped before it leaves (5 %). The relay reads B's reports
# about A: `packet loss` is each report's fraction lost in whole percent, truncated (12/256 =
# 4.7 % reads 4, as rtpengine does), averaged with truncation, and the first report may come
# before the first drop, so exactly 5 % loss reads 3 or 4. Tolerance: 5 % +- 3 (2 to 8).
LOSS_EVERY, LOSS_PCT, LOSS_TOLERANCE = 20, 5, 3


def gstreamer_rtcp_loss(ctx):
    """A call of two GStreamer rtpbin endpoints (plain RTP/AVP, RTCP on port + 1, a report
    about every second), ng driven directly. A (440 Hz) drops every 20th packet it sends; B
    (660 Hz) drops none. After 10 s, `delete`: the call's SSRC entry for A's SSRC (what B's
    reports say about A) shows the loss, the one for B's shows none and a higher MOS; the
    relay's loss-ratio histogram counted the report blocks."""
    relay = ctx.start_relay(system="disabled")
    b = ctx.base
    call, seconds = "gst-rtcp-loss", 10
    pa, pb = b + 20, b + 24
    ssrc_a, ssrc_b = 0x1055A000, 0xC1EAB000
    r = relay.cmd({"command": "offer", "call-id": call, "from-tag": "a",
                   "sdp": plain_sdp(pa, "RTP/AVP")})
    check(r.get("result") == "ok", "the offer accepted", r)
    offer_b = Sdp(r["sdp"])
    r = relay.cmd({"command": "answer", "call-id": call, "from-tag": "a", "to-tag": "b",
                   "sdp": plain_sdp(pb, "RTP/AVP")})
    check(r.get("result") == "ok", "the answer accepted", r)
    ans_a = Sdp(r["sdp"])
    for who, sdp in (("offer to B", offer_b), ("answer to A", ans_a)):
        check(sdp.media[0]["proto"] == "RTP/AVP" and not sdp.crypto(0),
              f"{who}: plain RTP/AVP", sdp.summary())
    m0 = relay.metrics()
    wav_a, wav_b = (os.path.join(ctx.workdir, f"gst-{x}.wav") for x in "ab")
    peers = [gst_rtcp_peer(ctx.procs, "gst-a", pa, ans_a.media[0]["port"], ssrc_a, 440, seconds,
                           wav_a, drop_every=LOSS_EVERY),
             gst_rtcp_peer(ctx.procs, "gst-b", pb, offer_b.media[0]["port"], ssrc_b, 660, seconds,
                           wav_b)]
    for p in peers:
        rc = ctx.procs.wait(p, seconds + 10)
        check(rc == 0, f"{p.name} to exit 0", f"{rc}: {open(p.logpath).read()[-500:]}")
    sent = re.search(r"sent (\d+) dropped (\d+)", open(peers[0].logpath).read())
    check(sent and int(sent.group(2)) > 0, "A to report the packets it dropped",
          open(peers[0].logpath).read()[-300:])
    dropped = int(sent.group(2))
    d = relay.cmd({"command": "delete", "call-id": call})
    check(d.get("result") == "ok", "the delete answered ok", d)
    ssrcs = d.get("SSRC", {})
    lossy, clean = ssrcs.get(str(ssrc_a)), ssrcs.get(str(ssrc_b))
    check(lossy and clean, f"the delete's SSRC dictionary to have A's ({ssrc_a}) and B's "
          f"({ssrc_b}) entries", list(ssrcs))
    avg_l, avg_c = lossy["average MOS"], clean["average MOS"]
    check(avg_l.get("samples", 0) >= 5 and avg_c.get("samples", 0) >= 5,
          "at least 5 reports about each direction (rtpbin reports about every second)",
          (avg_l, avg_c))
    check(abs(avg_l["packet loss"] - LOSS_PCT) <= LOSS_TOLERANCE,
          f"A's average packet loss within {LOSS_PCT} % +- {LOSS_TOLERANCE} (every "
          f"{LOSS_EVERY}th packet dropped)", avg_l)
    check(avg_c["packet loss"] == 0, "B's average packet loss 0 (nothing dropped)", avg_c)
    check(avg_l["MOS"] < avg_c["MOS"], "A's average MOS below B's", (avg_l["MOS"], avg_c["MOS"]))
    check(dropped // 2 <= lossy["cumulative loss"] <= dropped,
          f"A's cumulative loss in B's last report between half and all of the {dropped} "
          "dropped (the last report may come before the last drops)", lossy["cumulative loss"])
    receiver = [m for p in d.get("tags", {}).values() if p.get("tag") == "b"
                for m in p.get("medias", [])]
    check(receiver and receiver[0].get("quality", {}).get("reported SSRC") == ssrc_a,
          "B's media to carry the quality of what it receives, about A's SSRC",
          receiver[0].get("quality") if receiver else d.get("tags"))
    m1 = relay.metrics()
    count = (counter(m1, "srtp_relay_rtcp_loss_ratio_count")
             - counter(m0, "srtp_relay_rtcp_loss_ratio_count"))
    total = (counter(m1, "srtp_relay_rtcp_loss_ratio_sum")
             - counter(m0, "srtp_relay_rtcp_loss_ratio_sum"))
    check(count >= avg_l["samples"] + avg_c["samples"],
          "srtp_relay_rtcp_loss_ratio_count grown by every report block read "
          f"({avg_l['samples']} + {avg_c['samples']})", count)
    # The histogram's sum is exact (ppm, not whole percent); B's reports add A's loss, A's add 0.
    mean = 100 * total / avg_l["samples"]
    check(abs(mean - LOSS_PCT) <= LOSS_TOLERANCE,
          f"srtp_relay_rtcp_loss_ratio_sum over B's reports: {LOSS_PCT} % +- {LOSS_TOLERANCE}",
          f"{mean:.2f} %")
    expect_tone(wav_b, 440, 3.0, "B (what A sent, with its losses)")
    expect_tone(wav_a, 660, 3.0, "A")
    return (f"A dropped {dropped} of {int(sent.group(1)) + dropped}: SSRC {ssrc_a} packet loss "
            f"{avg_l['packet loss']} % average ({mean:.1f} % in the histogram), MOS "
            f"{avg_l['MOS'] / 10} over {avg_l['samples']} reports, cumulative "
            f"{lossy['cumulative loss']}; clean SSRC {ssrc_b}: {avg_c['packet loss']} %, MOS "
            f"{avg_c['MOS'] / 10}; loss-ratio histogram +{int(count)}")
