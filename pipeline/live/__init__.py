"""Live runs: a network stream (RTSP, RTMP, SRT, …) anonymized with bounded latency."""

from .source import is_stream_url

__all__ = ["is_stream_url"]
