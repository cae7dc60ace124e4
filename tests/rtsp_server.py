#!/usr/bin/python3
"""A real RTSP camera on loopback, for the stream tests and benchmarks.

Runs under Debian's /usr/bin/python3 (stdlib + gi only) because the project's python has no
GStreamer bindings; tests/rtsp_harness.py starts it. The file is re-encoded live (x264
zerolatency, a keyframe about every second, SPS/PPS with every keyframe) so a client joining
at any time decodes within a second, and the sinks sync to the clock, so frames arrive in
real time like a camera's. The factory is not shared: every client session starts its own
pipeline, at the start of the file.

With --record it is the other end instead, a relay that a publisher pushes to (RTSP
ANNOUNCE/RECORD over TCP or UDP, as to mediamtx): the H.264 it receives is written, not
re-encoded, to PATH as Matroska. Matroska because a file whose writer never finished it
(server killed) still reads back up to its last frames; an MP4 would have no index and not
open at all. The file is finished (EOS through the muxer) when the publisher
sends TEARDOWN or its connection drops, and on SIGTERM/SIGINT before the server exits. One
publisher at a time: the next one starts PATH over. The frames keep the publisher's
timestamps (RTP's, the first at 0), not their arrival times.

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4 [--loop] [--fps 25]
    /usr/bin/python3 tests/rtsp_server.py --port 8555 --record out.mkv

Prints `READY <port>` once listening; SIGTERM/SIGINT quit cleanly.
"""

import argparse
import os
import signal
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstPbutils", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstPbutils, GstRtspServer  # noqa: E402

ENCODE = ("videoconvert ! {rate}x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bframes=0"
          " ! rtph264pay name=pay0 pt=96 config-interval=1")
# The stream as received, parsed to AVC with codec_data (what matroskamux stores), no decoding.
RECORD = "( rtph264depay name=depay0 ! h264parse ! matroskamux ! filesink name=file sync=false buffer-mode=unbuffered )"
FINISH_S = 3.0  # on SIGTERM, how long to wait for open recordings to be finished


def file_fps(path: str) -> float:
    """Only to size the keyframe interval; 30 when the file does not say."""
    try:
        info = GstPbutils.Discoverer.new(5 * Gst.SECOND).discover_uri(Gst.filename_to_uri(path))
        v = info.get_video_streams()[0]
        if v.get_framerate_num() > 0 and v.get_framerate_denom() > 0:
            return v.get_framerate_num() / v.get_framerate_denom()
    except (GLib.Error, IndexError):
        pass
    return 30.0


class Feeder:
    """--loop: the file is decoded in a pipeline of its own and its frames pushed into the
    media's appsrc with timestamps that keep running across restarts. An EOS or a seek inside
    the media pipeline itself would be rtsp-media's business (it ends or re-syncs the session);
    this way the client sees one endless stream."""

    def __init__(self, path: str, appsrc: Gst.Element):
        self.src, self.offset, self.end = appsrc, 0, 0
        self.pipe = Gst.parse_launch("filesrc name=file ! decodebin ! videoconvert ! appsink name=sink sync=false max-buffers=4")
        self.pipe.get_by_name("file").set_property("location", path)
        sink = self.pipe.get_by_name("sink")
        sink.set_property("emit-signals", True)
        sink.connect("new-sample", self.on_sample)
        bus = self.pipe.get_bus()
        bus.add_signal_watch()
        bus.connect("message", self.on_message)
        self.pipe.set_state(Gst.State.PLAYING)

    def on_sample(self, sink):
        sample = sink.emit("pull-sample")
        buf = sample.get_buffer().copy()  # shallow: new timestamps, same memory
        rt = sample.get_segment().to_running_time(Gst.Format.TIME, buf.pts)
        buf.pts, buf.dts = self.offset + rt, Gst.CLOCK_TIME_NONE
        self.end = buf.pts + (buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else Gst.SECOND // 30)
        if self.src.get_property("caps") is None:
            self.src.set_property("caps", sample.get_caps())
        return self.src.emit("push-buffer", buf)

    def on_message(self, _bus, msg):
        if msg.type == Gst.MessageType.EOS:  # all frames pushed; a flushing seek restarts running time at 0
            self.offset = self.end
            self.pipe.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        elif msg.type == Gst.MessageType.ERROR:
            err, dbg = msg.parse_error()
            print(f"feeder error: {err.message} ({dbg})", file=sys.stderr, flush=True)
            self.src.emit("end-of-stream")

    def stop(self, *_):
        self.pipe.get_bus().remove_signal_watch()
        self.pipe.set_state(Gst.State.NULL)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--mount", default="/stream")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--file", help="serve this file (clients PLAY)")
    what.add_argument("--record", metavar="PATH", help="accept a published H.264 stream and write it to PATH (Matroska)")
    p.add_argument("--fps", type=float, help="resample to this rate (default: the file's)")
    p.add_argument("--loop", action="store_true", help="restart the file at its end, forever")
    p.add_argument("--exit-on-stdin-eof", action="store_true", help="quit when the parent's pipe closes (it died)")
    args = p.parse_args()
    if args.record:
        if args.loop or args.fps:
            p.error("--loop and --fps are for --file")
        if not os.path.isdir(os.path.dirname(os.path.abspath(args.record))):
            p.error(f"no such folder: {os.path.dirname(os.path.abspath(args.record))}")
    elif not os.path.isfile(args.file):
        p.error(f"no such file: {args.file}")  # now, not at the first client's DESCRIBE
    Gst.init(None)
    factory, finish = record_factory(args.record) if args.record else play_factory(args)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, factory)
    if not server.attach(None):
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr, flush=True)
        return 1

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    if args.exit_on_stdin_eof:
        GLib.io_add_watch(GLib.IOChannel.unix_new(sys.stdin.fileno()), GLib.PRIORITY_DEFAULT,
                          GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
                          lambda *_: loop.quit() or False)
    print(f"READY {args.port}", flush=True)
    loop.run()
    finish(server)
    return 0


def play_factory(args):
    """(factory, finish): PLAY mode, the file re-encoded live."""
    fps = args.fps or file_fps(args.file)
    rate = f"videorate ! video/x-raw,framerate={round(args.fps * 1000)}/1000 ! " if args.fps else ""
    encode = ENCODE.format(rate=rate, gop=max(1, round(fps)))
    source = "appsrc name=src format=time is-live=false block=true" if args.loop else "filesrc name=file ! decodebin"
    feeders = {}

    def configure(_factory, media):
        element = media.get_element()
        if args.loop:
            feeder = feeders[media] = Feeder(args.file, element.get_by_name("src"))
            media.connect("unprepared", lambda m: (feeder.stop(), feeders.pop(m, None)))
        else:
            element.get_by_name("file").set_property("location", args.file)

    def finish(_server):
        for feeder in feeders.values():
            feeder.stop()

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {source} ! {encode} )")
    factory.set_shared(False)
    factory.connect("media-configure", configure)
    return factory, finish


def record_factory(path: str):
    """(factory, finish): RECORD mode. eos_shutdown: when the session ends (TEARDOWN, or the
    publisher's connection closed) rtsp-media sends EOS into the pipeline and waits for it to
    reach the sink before tearing it down, so matroskamux writes its index, duration and sizes.
    The filesink is unbuffered so that even a killed server leaves all but the last ~0.2 s
    (the jitterbuffer's latency) on disk."""
    recording = set()

    def publisher_clock(_pipeline, _bin, element):
        """The frames keep the publisher's timestamps (RTP's, the first at 0) rather than ones
        from their arrival, skew-corrected: a gap or a jump it stamped is in the file as it was.
        On rtpbin, not on its jitterbuffers: rtpbin sets their mode after adding them."""
        if element.get_factory() is not None and element.get_factory().get_name() == "rtpbin":
            element.set_property("buffer-mode", 0)  # RTP_JITTER_BUFFER_MODE_NONE

    def configure(_factory, media):
        media.get_element().get_by_name("file").set_property("location", path)
        media.get_element().get_parent().connect("deep-element-added", publisher_clock)
        recording.add(media)

        def done(m):
            recording.discard(m)
            print(f"RECORDED {path}", file=sys.stderr, flush=True)

        media.connect("unprepared", done)

    def finish(server):
        """Exiting with a publisher still connected: end its recording the same way first, by
        closing its connection (rather than media.unprepare() under a client still feeding it)."""
        if not recording:
            return
        server.client_filter(lambda *_: GstRtspServer.RTSPFilterResult.REMOVE)
        ctx, deadline = GLib.MainContext.default(), time.monotonic() + FINISH_S
        while recording and time.monotonic() < deadline:
            ctx.iteration(False) or time.sleep(0.01)
        if recording:
            print(f"recording not finished within {FINISH_S:g}s: {path}", file=sys.stderr, flush=True)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    factory.set_launch(RECORD)
    factory.set_shared(False)
    factory.set_eos_shutdown(True)
    factory.connect("media-configure", configure)
    return factory, finish


if __name__ == "__main__":
    sys.exit(main())
