#!/usr/bin/python3
"""A GStreamer RTP endpoint with a real RTCP stack: `rtpbin` sends a PCMU tone (RTP on --port,
RTCP on --port + 1, RFC 3550 §11) to the relay's --remote-port (and + 1), receives what comes
back on the same two sockets, writes the decoded audio to a WAV file, and sends the sender and
receiver reports rtpbin makes from what it received: the relay reads their report blocks.

--drop-every N drops every Nth outgoing RTP packet (a buffer probe on the udpsink, after the
payloader numbered it, so the far end sees sequence gaps: network loss, exactly 1/N of it).
`identity drop-probability=0.05` was tried first: it dropped the same 16 of 500 packets
(3.2 %) in every run here (its random numbers are never seeded), neither the rate asked for
nor random. Prints "sent S dropped D" at the end. Sockets are shared between udpsrc
and udpsink as in gst_peer.py (the relay is symmetric). --rtcp-interval sets rtpsession's
minimum RTCP interval (RFC 3550's 5 s is too slow for a 10 s call).
"""
import argparse
import sys

import gi

import gst_loop

gi.require_version("Gst", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, Gst  # noqa: E402

ap = argparse.ArgumentParser()
for k in ("port", "remote-port", "ssrc", "freq"):
    ap.add_argument("--" + k, type=int, required=True)
ap.add_argument("--wav", required=True)
ap.add_argument("--seconds", type=float, required=True)
ap.add_argument("--drop-every", type=int, default=0)
ap.add_argument("--rtcp-interval", type=float, default=1.0)
a = ap.parse_args()

Gst.init(None)


def socket(port):
    s = Gio.Socket.new(Gio.SocketFamily.IPV4, Gio.SocketType.DATAGRAM, Gio.SocketProtocol.UDP)
    s.bind(Gio.InetSocketAddress.new_from_string("127.0.0.1", port), False)
    return s


rtp_sock, rtcp_sock = socket(a.port), socket(a.port + 1)
rtp_caps = "application/x-rtp,media=(string)audio,clock-rate=(int)8000,encoding-name=(string)PCMU,payload=(int)0"
pipeline = Gst.parse_launch(
    f"rtpbin name=rb "
    f"audiotestsrc is-live=true freq={a.freq} volume=0.5 samplesperbuffer=160 "
    f"num-buffers={int(a.seconds * 50)} ! audio/x-raw,rate=8000,channels=1 ! mulawenc "
    f"! rtppcmupay ssrc={a.ssrc} pt=0 ! rb.send_rtp_sink_0 "
    f"rb.send_rtp_src_0 ! udpsink name=rtp_out host=127.0.0.1 port={a.remote_port} sync=false async=false "
    f"rb.send_rtcp_src_0 ! udpsink name=rtcp_out host=127.0.0.1 port={a.remote_port + 1} "
    f"sync=false async=false "
    f'udpsrc name=rtp_in caps="{rtp_caps}" ! rb.recv_rtp_sink_0 '
    f'udpsrc name=rtcp_in caps="application/x-rtcp" ! rb.recv_rtcp_sink_0 '
    f"rb. ! rtppcmudepay ! mulawdec ! audioconvert ! wavenc ! filesink location={a.wav}")
for name, sock in (("rtp_out", rtp_sock), ("rtp_in", rtp_sock), ("rtcp_out", rtcp_sock),
                   ("rtcp_in", rtcp_sock)):
    pipeline.get_by_name(name).set_property("socket", sock)
counts = {"sent": 0, "dropped": 0}


def maybe_drop(pad, info):
    counts["sent"] += 1
    if a.drop_every and counts["sent"] % a.drop_every == 0:
        counts["dropped"] += 1
        return Gst.PadProbeReturn.DROP
    return Gst.PadProbeReturn.OK


pipeline.get_by_name("rtp_out").get_static_pad("sink").add_probe(Gst.PadProbeType.BUFFER, maybe_drop)
session = pipeline.get_by_name("rb").emit("get-internal-session", 0)
session.set_property("rtcp-min-interval", int(a.rtcp_interval * Gst.SECOND))

code = gst_loop.run(pipeline, a.seconds, ("rtp_in", "rtcp_in"))
print(f"sent {counts['sent'] - counts['dropped']} dropped {counts['dropped']}", flush=True)
sys.exit(code)
