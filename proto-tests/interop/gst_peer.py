#!/usr/bin/python3
"""A GStreamer SRTP endpoint: sends a PCMU tone through srtpenc and decodes what comes back
through srtpdec into a WAV file, both on ONE UDP socket. The relay is symmetric (it sends to the
address it latched), so sender and receiver must share the port; gst-launch cannot share a
socket between udpsrc and udpsink, hence this script.

Keys are the SDES key||salt in hex; suites '80', '32' (SRTCP always 80, RFC 3711 §5.2),
'256_80', '256_32' (RFC 6188) or 'gcm128', 'gcm256' (RFC 7714: GCM authenticates itself, so the
auth properties are null). Runs for --seconds, then ends the receiving branch with EOS so the WAV
header is written.
"""
import argparse
import sys

import gi

import gst_loop

gi.require_version("Gst", "1.0")
gi.require_version("Gio", "2.0")
from gi.repository import Gio, Gst  # noqa: E402

ap = argparse.ArgumentParser()
for k in ("port", "remote-port", "tx-ssrc", "rx-ssrc", "freq"):
    ap.add_argument("--" + k, type=int, required=True)
for k in ("tx-suite", "tx-key", "rx-suite", "rx-key", "wav"):
    ap.add_argument("--" + k, required=True)
ap.add_argument("--seconds", type=float, required=True)
a = ap.parse_args()

# suite -> (cipher, RTP auth, RTCP auth) in srtpenc/srtpdec's words
SUITES = {
    "80": ("aes-128-icm", "hmac-sha1-80", "hmac-sha1-80"),
    "32": ("aes-128-icm", "hmac-sha1-32", "hmac-sha1-80"),
    "256_80": ("aes-256-icm", "hmac-sha1-80", "hmac-sha1-80"),
    "256_32": ("aes-256-icm", "hmac-sha1-32", "hmac-sha1-80"),
    "gcm128": ("aes-128-gcm", "null", "null"),
    "gcm256": ("aes-256-gcm", "null", "null"),
}
tx_cipher, tx_auth, tx_rtcp_auth = SUITES[a.tx_suite]
rx_cipher, rx_auth, rx_rtcp_auth = SUITES[a.rx_suite]

Gst.init(None)
sock = Gio.Socket.new(Gio.SocketFamily.IPV4, Gio.SocketType.DATAGRAM, Gio.SocketProtocol.UDP)
sock.bind(Gio.InetSocketAddress.new_from_string("127.0.0.1", a.port), False)

rx_caps = (f"application/x-srtp,media=(string)audio,clock-rate=(int)8000,encoding-name=(string)PCMU,"
           f"payload=(int)0,ssrc=(uint){a.rx_ssrc},srtp-key=(buffer){a.rx_key},"
           f"srtp-cipher=(string){rx_cipher},srtp-auth=(string){rx_auth},"
           f"srtcp-cipher=(string){rx_cipher},srtcp-auth=(string){rx_rtcp_auth},roc=(uint)0")
pipeline = Gst.parse_launch(
    f"audiotestsrc is-live=true freq={a.freq} volume=0.5 samplesperbuffer=160 "
    f"num-buffers={int(a.seconds * 50)} ! audio/x-raw,rate=8000,channels=1 ! mulawenc "
    f"! rtppcmupay ssrc={a.tx_ssrc} ! srtpenc key={a.tx_key} rtp-cipher={tx_cipher} "
    f"rtp-auth={tx_auth} rtcp-cipher={tx_cipher} rtcp-auth={tx_rtcp_auth} "
    f"! udpsink name=out host=127.0.0.1 port={a.remote_port} sync=false async=false "
    f'udpsrc name=in caps="{rx_caps}" ! srtpdec ! rtppcmudepay ! mulawdec ! audioconvert '
    f"! wavenc ! filesink location={a.wav}")
pipeline.get_by_name("out").set_property("socket", sock)
pipeline.get_by_name("in").set_property("socket", sock)

sys.exit(gst_loop.run(pipeline, a.seconds, ["in"]))
