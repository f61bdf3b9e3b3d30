"""One side of ray_scaling.py: `run_simulation` of K synthetic institutions on the in-process
or the Ray backend; prints one JSON line (wall time, per-round seconds, final accuracy)."""

import json
import resource
import sys
import time

t0 = time.perf_counter()
from pathlib import Path  # noqa: E402

from _scaling_data import ROWS, TEST_FRACTION, name  # noqa: E402

from fedsilo.config.schema import RunConfig  # noqa: E402
from fedsilo.simulation.run import run_simulation  # noqa: E402

k, rounds, backend, actors = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
hidden = [int(h) for h in sys.argv[5].split(",")]
t_import = time.perf_counter() - t0
cfg = RunConfig.model_validate({
    "run": {"name": "ray-scaling", "rounds": rounds, "evaluate_every": rounds,
            "compare": False, "torch_threads": 1},
    "data": {"task": "multiclass", "target": "y", "loader": "_scaling_data:load",
             "loader_args": {"rows": ROWS}, "test_fraction": TEST_FRACTION,
             "institutions": [{"name": name(i)} for i in range(k)]},
    "model": {"kind": "mlp", "hidden": hidden},
    "client": {"epochs": 1, "batch_size": 16, "lr": 0.05},
    "strategy": {"name": "fedavg"},
    "simulation": {"backend": backend, **({"actors": actors} if actors else {})},
    "base_dir": str(Path(__file__).resolve().parent)})
t1 = time.perf_counter()
result = run_simulation(cfg, write=False)
print(json.dumps({"engine": backend, "wall_s": time.perf_counter() - t1, "import_s": t_import,
                  "round_s": [e.seconds for e in result.history.events],
                  "server_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "params": int(sum(v.size for v in result.history.params.values())),
                  "accuracy": result.final.get("accuracy", float("nan"))}))
