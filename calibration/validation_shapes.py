"""The validation set's runs as scenario files, so that a GPU can be calibrated at their shapes.

``gpuhours validate`` builds a scenario from each included row of the public set
(:func:`simulator.validate.row_to_raw`). Measuring a profile at exactly the shapes those runs time
(``gpuhours calibrate --shapes FILE``, one run per file, merged with ``--update``) lets a prediction
of them read measured rows. This writes one JSON scenario per included row whose ``gpu`` column
names the GPU asked for (JSON is valid YAML: the scenario loader reads it)::

    python -m calibration.validation_shapes --gpu H100 --out out/shapes
    bash calibration/device_session.sh rows      # on the lent GPU: each file into one profile

Exit codes: 0 written (the count on stderr), 2 bad arguments or no row of that GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def write_scenarios(csv_path: str, gpu: str, out_dir: str) -> list[Path]:
    """One scenario file per included row whose GPU contains ``gpu`` (case-insensitive); their paths."""
    from simulator.atomic import write_atomic
    from simulator.validate import read_csv, row_to_raw

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for row in read_csv(csv_path):
        if (row.get("include") or "").strip().lower() != "true" or gpu.lower() not in (row.get("gpu") or "").lower():
            continue
        raw, _ = row_to_raw(row)
        path = out / f"{row['run_id']}.json"
        write_atomic(path, lambda f, raw=raw: json.dump(raw, f, indent=1))
        written.append(path)
    return written


def main(argv=None) -> int:
    from simulator.errors import ConfigError
    from simulator.validate import DEFAULT_CSV

    p = argparse.ArgumentParser(prog="python -m calibration.validation_shapes", description=__doc__.split("\n\n")[0])
    p.add_argument("--gpu", required=True, help="a GPU name as the CSV's gpu column gives it, e.g. H100")
    p.add_argument("--csv", default=str(DEFAULT_CSV), help="validation CSV (default: the public set)")
    p.add_argument("--out", required=True, help="folder for the scenario files")
    args = p.parse_args(argv)
    try:
        written = write_scenarios(args.csv, args.gpu, args.out)
    except (ConfigError, OSError) as e:
        print(f"validation_shapes: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if not written:
        print(f"validation_shapes: no included row runs on a GPU named like {args.gpu!r}", file=sys.stderr)
        return 2
    print(f"validation_shapes: wrote {len(written)} scenarios to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
