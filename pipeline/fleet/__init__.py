"""Fleet processing: a folder or manifest of videos on a Ray cluster (local by default)."""

from pipeline.fleet.jobs import Job, discover, is_fleet_input

__all__ = ["Job", "discover", "is_fleet_input"]
