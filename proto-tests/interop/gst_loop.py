"""The GLib main loop the GStreamer endpoints (gst_peer.py, gst_rtcp_peer.py) run their pipeline
in: until end of stream or an error, ending the receiving branches itself once the sending one
is done so that the WAV header is written, and never hanging."""
import sys

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def run(pipeline, seconds, receivers):
    """Plays `pipeline`; `seconds` + 0.7 s in (the sending branch has ended by itself through
    num-buffers), sends EOS into the elements named in `receivers`; stops at EOS, at an error
    or after `seconds` + 5 s. Returns the exit status: 1 after a GStreamer error (printed to
    stderr), else 0."""
    loop = GLib.MainLoop()
    status = {"code": 0}

    def on_message(bus, msg):
        if msg.type == Gst.MessageType.EOS:
            loop.quit()
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"gst error: {err.message} ({dbg})", file=sys.stderr)
            status["code"] = 1
            loop.quit()

    def finish():
        # The sending branch ended by itself (num-buffers); end the receiving ones too.
        for name in receivers:
            pipeline.get_by_name(name).send_event(Gst.Event.new_eos())
        return False

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)
    pipeline.set_state(Gst.State.PLAYING)
    GLib.timeout_add(int((seconds + 0.7) * 1000), finish)
    GLib.timeout_add(int((seconds + 5) * 1000), loop.quit)  # never hang
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    return status["code"]
