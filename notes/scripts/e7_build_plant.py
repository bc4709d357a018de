"""Build, verify and (optionally) ship a planted organism (issue 14 item 3).

    python notes/scripts/e7_build_plant.py TWIN OUT [key=value ...]   (PlantConfig fields)

e.g. ``python notes/scripts/e7_build_plant.py organism-micro-twin
interp_unlearn/assets/organism-planted-micro/model steps=400 seq_len=128 lr=1e-2 threads=1``.
Prints the training evaluations and ``verification.json`` (written beside the checkpoint).
"""
import json
import sys
import time

from interp_unlearn.data.planted import PlantConfig
from interp_unlearn.pipeline.planted_run import VERIFY_FILE, build_plant

twin, out = sys.argv[1], sys.argv[2]
cfg = PlantConfig.from_assignments(sys.argv[3:], PlantConfig(threads=1))
t = time.time()
lm = build_plant(twin, out, cfg, progress=True)
meta = json.loads((lm.path / "plant.json").read_text())
print(json.dumps(meta["metrics"]["eval"], indent=1))
print(json.dumps(json.loads((lm.path / VERIFY_FILE).read_text()), indent=1))
print(f"total {time.time() - t:.0f} s (training {meta['metrics']['train_seconds']} s)")
