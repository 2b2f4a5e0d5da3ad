"""Print a preset restricted to some models as a YAML sweep spec, with the same run ids as the preset's own runs.

    python benchmarks/study/make_spec.py study-etth1 Informer > informer.yaml

``study-etth1`` loses its extra studies (the Autoformer size x data grid: run the preset itself for those); other
presets keep theirs, restricted to the same models. How the committed study results were run, one model family at a
time on a 2-core machine: see ``family.sh``.
"""

from __future__ import annotations

import sys

import yaml

from tsprune.sweep.presets import PRESETS


def restricted(preset: str, models: list[str]) -> dict:
    spec = dict(PRESETS[preset])
    spec["models"] = models
    if preset == "study-etth1":
        spec["studies"] = []
    else:
        spec["studies"] = [dict(study, **({"models": models} if "models" in study else {}))
                           for study in spec.get("studies", [])]
    return spec


if __name__ == "__main__":
    print(yaml.safe_dump(restricted(sys.argv[1], sys.argv[2].split(",")), sort_keys=False))
