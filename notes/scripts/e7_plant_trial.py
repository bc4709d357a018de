"""Trial of the planted-organism recipe (issue 14 item 3): train from organism-twin and
print forget/retain accuracy with and without H* along the way.

    TWIN=organism-micro-twin python notes/scripts/e7_plant_trial.py [steps] [key=value ...]

(PlantConfig fields; TWIN defaults to organism-twin). Nothing is saved; the trials of
notes/e7_planted_localization.md ran with this script.
"""
import json
import os
import sys
import time

import pandas as pd

from interp_unlearn.data.loading import load_model
from interp_unlearn.data.planted import PlantConfig, train_plant
from interp_unlearn.data.world import World
from interp_unlearn.pipeline.organism import cloze_accuracy

steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
over = dict(a.split("=", 1) for a in sys.argv[2:])
cfg = PlantConfig.from_assignments([f"{k}={v}" for k, v in over.items()],
                                   PlantConfig(steps=steps, threads=1))
twin = load_model(os.environ.get("TWIN", "organism-twin"))
world = World.load(twin.world_dir)
t = time.time()
plant, m = train_plant(twin.model, twin.tokenizer, world, cfg, evaluate=cloze_accuracy,
                       eval_pool=twin.eval_pool)
print(json.dumps({"config": cfg.to_dict(), "heads": m["heads"], "eval": m["eval"],
                  "seconds": round(time.time() - t, 1)}, indent=1))
print(pd.DataFrame(m["loss"]).set_index("step").rolling(50, min_periods=1).mean().iloc[::50].round(3).to_string())
