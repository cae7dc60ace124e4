"""Identity: tracks → persons → one fake identity each (PerFace / FIVA).

`stage` embeds track samples and decides persons, `persons` links them (within a video or a
fleet registry), `gallery` holds the fake identities, `assignment` picks one per person."""
