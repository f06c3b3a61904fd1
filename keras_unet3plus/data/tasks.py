"""Task presets: which label values a dataset's files may hold, how they map to training targets,
how many output channels the model needs and which HU window suits the organ.

Default HU windows (clipped, then scaled to [0, 1]):

- ``liver`` / ``liver_tumour``: [-200, 250] HU, the window of the UNet 3+ authors' public LiTS
  preprocessing (and of most LiTS pipelines). It keeps fat (about -100 HU) distinct from soft
  tissue, so the liver outline against perihepatic fat stays visible, and leaves head room above
  enhanced parenchyma (60-150 HU) and hypodense lesions.
- ``spleen``: [-160, 240] HU, the standard abdominal soft-tissue window (W 400 / L 40). MONAI's
  Task09 tutorial clips tighter ([-57, 164]); that throws away the fat/soft-tissue contrast that
  separates the spleen from the left body wall and the stomach, so we keep the wider radiological
  window. Either is a one-line change: ``PreprocessConfig(hu_window=(-57, 164))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


@dataclass(frozen=True)
class TaskSpec:
    """What a segmentation task reads from label files and what the model predicts.

    ``mapping`` sends every allowed source label value to a target class; ``num_classes`` is 1 for
    a binary task (one sigmoid channel, target {0, 1}) and K (background included) otherwise.
    """

    name: str
    label_values: tuple[int, ...]
    mapping: dict[int, int]
    num_classes: int
    hu_window: tuple[float, float]
    class_names: tuple[str, ...]
    organ: str
    msd_labels: dict[str, str] = field(default_factory=dict)

    @property
    def binary(self) -> bool:
        """True when the model has one sigmoid channel."""
        return self.num_classes == 1

    def lookup_table(self) -> np.ndarray:
        """uint8 lookup table source value -> target class (255 marks values the task rejects)."""
        lut = np.full(256, 255, dtype=np.uint8)
        for src, dst in self.mapping.items():
            lut[src] = dst
        return lut

    def map_label(self, label: np.ndarray) -> np.ndarray:
        """Map a validated integer label array (values in ``label_values``) to target classes."""
        return self.lookup_table()[np.asarray(label, dtype=np.uint8)]

    def to_dict(self) -> dict:
        """JSON-friendly description (stored in cache keys and beside models)."""
        return {
            "name": self.name,
            "label_values": list(self.label_values),
            "mapping": {str(k): v for k, v in sorted(self.mapping.items())},
            "num_classes": self.num_classes,
            "hu_window": list(self.hu_window),
        }


TASKS: dict[str, TaskSpec] = {
    "liver": TaskSpec(
        name="liver",
        label_values=(0, 1, 2),
        mapping={0: 0, 1: 1, 2: 1},  # LiTS: the liver is label >= 1 (tumours are part of it)
        num_classes=1,
        hu_window=(-200.0, 250.0),
        class_names=("background", "liver"),
        organ="liver",
        msd_labels={"0": "background", "1": "liver", "2": "cancer"},
    ),
    "liver_tumour": TaskSpec(
        name="liver_tumour",
        label_values=(0, 1, 2),
        mapping={0: 0, 1: 1, 2: 2},
        num_classes=3,
        hu_window=(-200.0, 250.0),
        class_names=("background", "liver", "tumour"),
        organ="liver",
        msd_labels={"0": "background", "1": "liver", "2": "cancer"},
    ),
    "spleen": TaskSpec(
        name="spleen",
        label_values=(0, 1),
        mapping={0: 0, 1: 1},
        num_classes=1,
        hu_window=(-160.0, 240.0),
        class_names=("background", "spleen"),
        organ="spleen",
        msd_labels={"0": "background", "1": "spleen"},
    ),
}
TASKS["liver_tumor"] = TASKS["liver_tumour"]


def get_task(task: str | TaskSpec) -> TaskSpec:
    """Return the preset for ``task`` ("liver", "liver_tumour", "spleen"); TaskSpecs pass through."""
    if isinstance(task, TaskSpec):
        return task
    try:
        return TASKS[str(task).lower()]
    except KeyError:
        raise ValueError(
            f"unknown task {task!r}; choose one of {sorted(k for k in TASKS if k != 'liver_tumor')}"
        ) from None


#: Label names (lower case) that mean each structure in a dataset's own label list (nnU-Net v2's
#: dataset.json ``labels``, TotalSegmentator-derived sets, challenge releases).
LABEL_NAMES = {
    "liver": ("liver",),
    "spleen": ("spleen",),
    "tumour": (
        "tumor",
        "tumour",
        "lesion",
        "lesions",
        "cancer",
        "liver_tumor",
        "liver_tumour",
        "liver tumor",
        "liver tumour",
        "liver_lesion",
        "hepatic_tumor",
    ),
}


def _values(value, where: str) -> tuple[int, ...]:
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        out = tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: label value {value!r} is not an integer or a list of integers") from None
    if any(not 0 <= v < 255 for v in out):
        raise ValueError(f"{where}: label values must be in 0..254, got {value!r}")
    return out


def task_for_label_names(task: str | TaskSpec, labels: dict, source: str = "dataset.json") -> TaskSpec:
    """The task's preset with its label mapping rebuilt from a dataset's ``{name: value}`` list.

    The organ (and, for liver tasks, the tumour) is found by name; every other structure the
    dataset labels becomes background. Region lists (``"liver": [1, 2]``) map all their values.
    Errors (the organ missing, or named twice) name ``source``.
    """
    spec = get_task(task)
    by_name = {str(k).strip().lower(): _values(v, f"{source}: label {k!r}") for k, v in dict(labels).items()}

    def find(structure: str, required: bool) -> tuple[int, ...]:
        hits = [n for n in by_name if n in LABEL_NAMES[structure]]
        if len(hits) > 1:
            raise ValueError(f"{source}: several labels name the {structure} ({', '.join(hits)}); keep one")
        if not hits:
            if required:
                raise ValueError(
                    f"{source}: no '{structure}' label among {sorted(by_name)}; task "
                    f"{spec.name!r} needs one (names understood: {', '.join(LABEL_NAMES[structure])})"
                )
            return ()
        return by_name[hits[0]]

    organ = find(spec.organ, required=True)
    tumour = find("tumour", required=spec.num_classes == 3) if spec.organ == "liver" else ()
    every = sorted({v for vs in by_name.values() for v in vs} | {0})
    mapping = {v: 0 for v in every}
    for v in organ:
        mapping[v] = 1
    for v in tumour:
        mapping[v] = 2 if spec.num_classes == 3 else 1
    return replace(spec, label_values=tuple(every), mapping=mapping)
