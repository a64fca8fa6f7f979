"""The parties directory follows its file: a change is validated and applied without restart.

In Kubernetes the directory is a ConfigMap mounted as a file; the kubelet replaces the file when
the ConfigMap changes. Each service polls it (content, not timestamps: a ConfigMap update swaps
a symlink) and, when it changed, loads and validates the new version. A valid one replaces the
directory in place, so authorisation, fan-out and webhooks use it from the next call; an
invalid one is refused with the reason in the log and a metric, and the previous directory
stays in force — a typo never takes a service down.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import mode
from prometheus_client import Counter

from stopsms.domain.parties import DirectoryError, PartiesDirectory

log = logging.getLogger(__name__)

RELOADS = Counter(
    "stopsms_parties_directory_reloads_total",
    "Parties directory changes seen, by outcome (applied, refused).",
    ["outcome"],
)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


class DirectoryReloader(mode.Service):
    """Polls the directory's file and replaces the directory when it changed."""

    def __init__(
        self, directory: PartiesDirectory, interval_s: float = 2.0, **kwargs: object
    ) -> None:
        if directory.source is None:
            raise ValueError("the directory was not loaded from a file")
        self.directory = directory
        self.path: Path = directory.source
        self.interval_s = interval_s
        self._seen = _digest(self.path)
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def check_once(self) -> bool:
        """Reload if the file changed; True when a new directory was applied."""
        digest = _digest(self.path)
        if digest is None or digest == self._seen:
            return False
        self._seen = digest
        try:
            newer = PartiesDirectory.load(self.path)
        except DirectoryError as exc:
            RELOADS.labels("refused").inc()
            log.error("parties directory change refused, the previous one stays: %s", exc)
            return False
        changes = self.directory.replace(newer)
        RELOADS.labels("applied").inc()
        log.info(
            "parties directory reloaded: %d parties; %s",
            len(list(self.directory)),
            "; ".join(changes) or "no change in entitlements",
        )
        return True

    @mode.Service.task
    async def _poll(self) -> None:
        while not self.should_stop:
            await self.sleep(self.interval_s)
            self.check_once()
