"""Where the screenshots of complaints are kept: outside Kafka, named by their digest.

A complaint's record carries only the screenshot's SHA-256 and its location; the image lives
here, written once (a second upload of the same image is the same file) and never overwritten.
The name is the digest: nothing in the store says whose it is. In a deployment the folder is
a shared volume (``STOPSMS_SCREENSHOT_DIR``, k8s/base/intake.yaml) that every intake replica
writes and the console reads.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

EXTENSIONS = {"png": "png", "jpeg": "jpg"}


class FileScreenshotStore:
    """Screenshots as files ``<sha256>.<png|jpg>`` in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, kind: str, image: bytes) -> tuple[str, str]:
        """Keep a cleaned image; (its SHA-256 in hex, its location in the store)."""
        digest = hashlib.sha256(image).hexdigest()
        name = f"{digest}.{EXTENSIONS[kind]}"
        path = self.folder / name
        if not path.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".upload-")
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(image)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, path)  # whole or not at all
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return digest, f"screenshots/{name}"

    def get(self, location: str) -> bytes:
        """A kept image by its location."""
        name = location.removeprefix("screenshots/")
        if "/" in name or name.startswith("."):
            raise ValueError("not a location of this store")
        return (self.folder / name).read_bytes()
