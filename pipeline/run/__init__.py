"""One video end to end: `config` (what is asked), `build` (models and stages, shared with live
and fleet runs), `file` (decode → stages → encode, all outputs or none)."""
