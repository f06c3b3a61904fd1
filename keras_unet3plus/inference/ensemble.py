"""Several models as one runtime: their probabilities averaged per slice (nnU-Net's ensemble of
folds), so the predictor, its streaming, the CGM gate, DICOM input and SEG output stay one path.

The CGM decision is made from the averaged ``cls`` when every member returns its ``cls`` (a
``.keras`` model); an export carries its gate in its graph, so its probabilities arrive gated by its
own CGM, and the members that do return ``cls`` are then gated by theirs before the average. With
``--skip-absent`` every member runs its part up to the CGM, the averaged ``cls`` picks the slices,
and only those are decoded by each member.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..output_names import SEG
from ..runtimes import Runtime
from .postprocess import apply_gate

__all__ = ["EnsembleRuntime", "check_members", "average", "member_names"]


def average(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """The element-wise mean in float32, summed in the given order (one array: itself, exactly)."""
    total = np.array(arrays[0], dtype=np.float32, copy=True)
    for a in arrays[1:]:
        total += np.asarray(a, dtype=np.float32)
    return total / np.float32(len(arrays))


def _label(rt: Runtime) -> str:
    """How the errors name a member: its file, else its name."""
    return str(rt.path) if rt.path is not None else rt.name


def member_names(rt: Runtime) -> list[str]:
    """The files (or names) of the models a runtime runs: an ensemble's members, else itself."""
    return [_label(m) for m in getattr(rt, "members", [rt])]


def _identity(rt: Runtime) -> dict:
    """What members must share: the task, the classes and the preprocessing (its input size too)."""
    info = rt.info
    if info is None:
        raise ValueError(
            f"model '{_label(rt)}': an ensemble member needs its model info (task, classes, "
            f"preprocessing) to be checked against the others"
        )
    return {
        "task": info.task,
        "classes": int(info.num_classes),
        "preprocessing": info.preprocess_config(rt.name).to_dict(),
        "input": (rt.image_size, rt.channels),
    }


def check_members(members: Sequence[Runtime]) -> None:
    """Refuse, in one line naming both files, members that do not predict the same thing on the same
    input (another task, other classes, another preprocessing or input size), or that output labels."""
    if not members:
        raise ValueError("an ensemble needs at least one model")
    for rt in members:
        if rt.labels_output:
            raise ValueError(
                f"model '{_label(rt)}' outputs labels (exported with a threshold); an ensemble "
                f"averages probabilities: export it without --threshold"
            )
    first = _identity(members[0])
    for rt in members[1:]:
        other = _identity(rt)
        for key, value in first.items():
            if other[key] != value:
                if isinstance(value, dict):
                    diff = sorted(k for k in set(value) | set(other[key]) if value.get(k) != other[key].get(k))
                    what = ", ".join(f"{k} {value.get(k)!r} vs {other[key].get(k)!r}" for k in diff)
                else:
                    what = f"{value!r} vs {other[key]!r}"
                raise ValueError(
                    f"models '{_label(members[0])}' and '{_label(rt)}' cannot form an ensemble: "
                    f"different {key} ({what})"
                )


class EnsembleRuntime(Runtime):
    """``members`` (checked by :func:`check_members`) run on every batch; ``segment`` returns the
    mean of their ``seg`` and ``cls``. The first member's info stands for all (threshold included)."""

    kind = "ensemble"

    def __init__(self, members: Sequence[Runtime]):
        members = list(members)
        check_members(members)
        super().__init__(None, members[0].info)
        self.members = members
        self.input_shape = tuple(members[0].input_shape)
        self._output_names = [SEG]

    @property
    def name(self) -> str:
        return " + ".join(_label(m) for m in self.members)

    @property
    def num_classes(self) -> int:
        return self.members[0].num_classes

    @property
    def compute_precision(self) -> str:
        return "/".join(dict.fromkeys(m.compute_precision for m in self.members))

    def describe(self) -> str:
        return f"ensemble of {len(self.members)}: " + "; ".join(m.describe() for m in self.members)

    def seg_is_labels(self, seg_channels: int) -> bool:
        return any(m.seg_is_labels(seg_channels) for m in self.members)

    @property
    def seg_channels(self) -> int:
        return self.members[0].seg_channels

    def segment(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = [m.segment(batch) for m in self.members]
        clss = [c for _, c in outs if c is not None]
        if len(clss) == len(outs):
            return average([s for s, _ in outs]), average(clss)
        return average([apply_gate(np.asarray(s, np.float32), c)[0] for s, c in outs]), None

    @property
    def can_skip_absent(self) -> bool:
        return all(m.can_skip_absent for m in self.members)

    def segment_present(self, batch: np.ndarray, present: np.ndarray | None = None):
        """Each member's part up to the CGM; the averaged ``cls`` (or ``present``) picks the slices
        every member decodes; their ``seg`` averaged (the others all zero), as :meth:`segment` gated."""
        batch = self._check(batch)
        encoded = [m.encode(batch) for m in self.members]
        cls = average([c for _, c in encoded])
        rows = np.flatnonzero(cls[:, 1] > cls[:, 0] if present is None else present)
        seg = np.zeros((len(batch), *batch.shape[1:3], self.seg_channels), np.float32)
        if len(rows):
            decoded = []
            for m, (features, _) in zip(self.members, encoded):
                d = np.asarray(m.decode([np.asarray(f)[rows] for f in features]), dtype=np.float32)
                decoded.append(d[..., None] if d.ndim == 3 else d)
            seg[rows] = average(decoded)
        return seg, cls

    def _run(self, batch: np.ndarray) -> dict:
        seg, cls = self.segment(batch)
        return {SEG: apply_gate(seg, cls)[0]}
