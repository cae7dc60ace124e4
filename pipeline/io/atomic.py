"""Files that appear under their final name only when complete.

Every file a run writes goes to a temp file in the target's folder first; `commit()` renames
it into place (atomic within one folder), `discard()` removes it. A crash or an error never
leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile


class AtomicFile:
    """A temp path in the target's folder; `commit()` renames it into place, `discard()` removes it.

    Same folder, so the rename is atomic and a crash never leaves a half-written file under
    the final name.
    """

    def __init__(self, final_path: str):
        self.final_path = os.path.abspath(final_path)
        folder, name = os.path.split(self.final_path)
        stem, ext = os.path.splitext(name)
        fd, self.path = tempfile.mkstemp(prefix=f".{stem}.", suffix=f".partial{ext}", dir=folder)
        os.close(fd)

    def commit(self) -> str:
        os.replace(self.path, self.final_path)
        return self.final_path

    def discard(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def write_json_atomic(path: str, data: dict) -> None:
    f = AtomicFile(path)
    try:
        with open(f.path, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
        f.commit()
    except BaseException:
        f.discard()
        raise
