"""The names of a UNet 3+ model's outputs, declared once (docs/design.md, Model).

They name the Keras outputs, the losses' dict keys, the exported graphs' outputs and the runtimes'
results, so a saved or exported model keeps them: change none of them. Standard library only: the
lowest layer, which every module may import.
"""

from __future__ import annotations

#: the final segmentation (from De1, full input size)
SEG = "seg"
#: the classification-guided module: ``(B, 2)`` [organ absent, organ present]
CLS = "cls"
#: deep-supervision side outputs are ``side_<level>`` (De2, De3, De4, E5)
SIDE_PREFIX = "side_"
SIDE_LEVELS = (2, 3, 4, 5)


def side(level: int) -> str:
    """The name of the deep-supervision output of decoder level ``level``."""
    return f"{SIDE_PREFIX}{int(level)}"


SIDE_OUTPUTS = tuple(side(k) for k in SIDE_LEVELS)


def is_side(name: str) -> bool:
    """Whether ``name`` is a deep-supervision side output (``side_<int>``)."""
    return name.startswith(SIDE_PREFIX) and name[len(SIDE_PREFIX) :].isdigit()


def side_level(name: str) -> int:
    """The decoder level of a side output's name (``side_3`` -> 3)."""
    if not is_side(name):
        raise ValueError(f"'{name}' is not a side output name ({SIDE_PREFIX}<level>)")
    return int(name[len(SIDE_PREFIX) :])
