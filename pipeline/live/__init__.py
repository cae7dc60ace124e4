"""Live runs: a network stream (RTSP, RTMP, SRT, …) anonymized with bounded latency."""

from pipeline.live.source import is_stream_url

__all__ = ["is_stream_url"]
