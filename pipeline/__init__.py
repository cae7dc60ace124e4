"""anonswap pipeline: streaming video face anonymization.

    from pipeline import RunConfig, anonymize_video
    report = anonymize_video("in.mp4", "out.mp4", RunConfig(mode="blur"))

Stages (one file each): video_reader → detector → trackers.FaceTracker → anonymizer → video_writer,
joined on threads by `stages.StagePipeline`.
"""

from .errors import AnonswapError, InputNotFoundError, InvalidInputError, OutputError
from .records import Detections, Face, Frame, TrackedFrame, VideoInfo
from .run import RunConfig, anonymize_video

__all__ = [
    "AnonswapError", "InputNotFoundError", "InvalidInputError", "OutputError",
    "Detections", "Face", "Frame", "TrackedFrame", "VideoInfo", "RunConfig", "anonymize_video",
]
