"""Identity: tracks → persons → one fake identity each (PerFace / FIVA).

`stage` embeds track samples and decides persons, `persons` links them (within a video or a
fleet registry), `gallery` holds the fake identities, `attributes` estimates a person's
gender and age group, `assignment` picks one fake identity per person within them."""
