"""Print a preset restricted to some models as a YAML sweep spec, with the same run ids as the preset's own runs.

    python benchmarks/study/make_spec.py study-etth1 Informer > informer.yaml
    python benchmarks/study/make_spec.py study-etth1 size-data > size-data.yaml
    python benchmarks/study/make_spec.py seeds-etth1 Informer 2022 > informer-2022.yaml

``study-etth1`` loses its extra study (the Autoformer size x data grid) in a model's spec; ``size-data`` is that
study alone, less the d_model-512 runs at the full training split, which are the Autoformer family's. The five
families and ``size-data`` together are the preset's runs, each once (``tests/test_benchmarks.py`` checks it).
Other presets keep their studies, restricted to the same models. How the committed study results were run, one
model family at a time on a 2-core machine: see ``family.sh``.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from tsprune.sweep.presets import PRESETS

SIZE_DATA = "size-data"


def restricted(preset: str, models: list[str], seeds: list[int] | None = None) -> dict[str, Any]:
    spec = dict(PRESETS[preset])
    spec["models"] = models
    if seeds is not None:
        spec["seeds"] = seeds
    if preset == "study-etth1":
        spec["studies"] = []
    else:
        spec["studies"] = [dict(study, **({"models": models} if "models" in study else {}))
                           for study in spec.get("studies", [])]
    return spec


def size_data(preset: str = "study-etth1") -> dict[str, Any]:
    """The preset's size x data study as a spec of its own: the smaller sizes at every fraction, then the default
    size at the smaller fractions (its full-split dense run and prune runs belong to the main grid). The size names
    stay the preset's, so the records' labels are too."""
    spec = dict(PRESETS[preset])
    (study,) = spec["studies"]
    top = max(study["train_fractions"])
    sizes = {name: size for name, size in study["model_sizes"].items() if size}
    default = {name: size for name, size in study["model_sizes"].items() if not size}
    main = {**spec, **study, "model_sizes": sizes}
    main["studies"] = [{"model_sizes": default, "train_fractions": [f for f in study["train_fractions"] if f != top]}]
    return main


if __name__ == "__main__":
    family = sys.argv[2]
    seeds = [int(seed) for seed in sys.argv[3].split(",")] if len(sys.argv) > 3 else None
    spec = size_data(sys.argv[1]) if family == SIZE_DATA else restricted(sys.argv[1], family.split(","), seeds)
    print(yaml.safe_dump(spec, sort_keys=False))
