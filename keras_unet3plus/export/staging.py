"""An export's artefacts are written to hidden temporary siblings and moved into place only once
every check has passed, each with its model-info sidecar; a failure removes them all, so an export
leaves either every file or none."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from collections.abc import Iterator

from ..modelinfo import SIDECAR_IN_DIR, ModelInfo, atomic_write_text, save_info


def temp_sibling(final: Path) -> Path:
    """A hidden path in the same folder with the same suffix (runtimes dispatch on it)."""
    return final.with_name(f".{final.stem}.tmp-{uuid.uuid4().hex[:8]}{final.suffix}")


def remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class Stage:
    """Temporary artefacts of one export; `publish` moves them into place, `discard` removes them."""

    def __init__(self):
        self.items: list[tuple[Path, Path, bool]] = []  # (temp, final, write a sidecar)

    def add(self, final: Path, sidecar: bool = True) -> Path:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_sibling(final)
        self.items.append((tmp, final, sidecar))
        return tmp

    def discard(self) -> None:
        for tmp, *_ in self.items:
            remove(tmp)

    def publish(self, info: ModelInfo | None) -> list[Path]:
        """Move every staged artefact to its final path (a folder replaces the old one whole), each
        file with its sidecar, and return the final paths."""
        out = []
        for tmp, final, sidecar in self.items:
            if tmp.is_dir():
                if info is not None:
                    atomic_write_text(tmp / SIDECAR_IN_DIR, info.to_json())
                backup = None
                if final.exists():
                    backup = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
                    os.replace(final, backup)
                os.replace(tmp, final)
                if backup is not None:
                    remove(backup)
            else:
                if info is not None and sidecar:
                    save_info(final, info)
                os.replace(tmp, final)
            out.append(final)
        return out


@contextmanager
def staged() -> Iterator[Stage]:
    """A `Stage` whose files are removed when the block fails."""
    stage = Stage()
    try:
        yield stage
    except BaseException:
        stage.discard()
        raise
