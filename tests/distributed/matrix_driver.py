"""Test-only driver: several trainer runs in ONE process (or one `accelerate
launch`), one after another, so the method x backbone x launch matrix pays
the interpreter, import and process-group start-up once per launch, not once
per cell.

    python tests/distributed/matrix_driver.py PLAN.json
    accelerate launch --config_file X.yaml tests/distributed/matrix_driver.py PLAN.json

PLAN.json: [{"name": str, "args": [str, ...]}, ...]; each run is
`python -m dtvg_dist.train *args` as a user would type it. Before each run a
line `=== matrix run NAME ===` goes to stdout (the log is split on it); the
first run that fails ends the driver with its exit code.

Each run ends with ``Accelerator.end_training()``, which destroys the
process group; accelerate keeps its (process-wide) state, so the next run's
Accelerator would not make a new one. The driver therefore keeps the group
for the next run and destroys it once, after the last.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(plan_file: str) -> int:
    from accelerate.state import PartialState

    from dtvg_dist import train

    destroy = PartialState.destroy_process_group
    PartialState.destroy_process_group = lambda self, group=None: None  # type: ignore[method-assign]
    try:
        for run in json.loads(Path(plan_file).read_text()):
            print(f"=== matrix run {run['name']} ===", flush=True)
            code = train.main(list(run["args"]))
            sys.stdout.flush()
            if code:
                print(f"=== matrix run {run['name']} failed: exit {code} ===", flush=True)
                return code
    finally:
        PartialState.destroy_process_group = destroy  # type: ignore[method-assign]
        if PartialState._shared_state:
            PartialState().destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
