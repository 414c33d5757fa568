#!/usr/bin/env bash
# Keep a sweep's finished runs in a folder you commit, and put them back.
#   scripts/keep_sweep_runs.sh out SWEEP_DIR KEEP_DIR [MODELS_DIR]   # finished runs' metrics.json,
#       config.json and history.jsonl (every 10th step, loss terms, 4 significant digits) into
#       KEEP_DIR; a demo CoT run's model (final/, which starts its seed's latent runs; a retrain on
#       another CPU need not match) into MODELS_DIR, never into KEEP_DIR: no weights are committed
#   scripts/keep_sweep_runs.sh in SWEEP_DIR KEEP_DIR [MODELS_DIR]    # back into a new sweep folder: the
#       sweep skips them; a CoT run comes back only with its model from MODELS_DIR (without it the
#       sweep retrains it, and that seed's latent runs still to run start from the retrained model)
# MODELS_DIR defaults to outputs/<KEEP_DIR's name> (ignored by git). `kava report KEEP_DIR` reads the
# kept runs (docs/results/demo-ablation is such a folder).
set -euo pipefail
mode=$1 src=$2 dst=$3 models=${4:-outputs/$(basename "$3")}
py=$(dirname "$0")/../.venv/bin/python
case "$mode" in
  out)
    mkdir -p "$dst/runs"; cp "$src/sweep.json" "$dst/"
    # only the grid's own runs: a sweep folder seeded with `in` also holds the other grid's runs
    for n in $("$py" -c 'import json, sys; print(*(r["name"] for r in json.load(open(sys.argv[1]))["runs"]))' "$src/sweep.json"); do
      d=$src/runs/$n; [ -f "$d/metrics.json" ] || continue; mkdir -p "$dst/runs/$n"
      cp "$d/metrics.json" "$d/config.json" "$dst/runs/$n/"
      h=$d/history.jsonl; [ -f "$h" ] || h=$d/train/history.jsonl
      "$py" - "$h" "$dst/runs/$n/history.jsonl" <<'PY'
import json, sys
from kava.experiments.reports import BASELINES, LOSS_TERMS  # what kava report draws
keep = ("step", *LOSS_TERMS, *BASELINES.values(), "lr")
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
with open(sys.argv[2], "w") as f:
    for r in rows:
        if r.get("step", 0) % 10 == 0:
            f.write(json.dumps({k: (r[k] if k == "step" else float(f"{r[k]:.4g}")) for k in keep if k in r}) + "\n")
PY
      # (a MODELS_DIR that is SWEEP_DIR itself already holds the model: copying it onto itself would delete it)
      if [[ $n == cot-* && -d $d/final && $(realpath -m "$models") != $(realpath -m "$src") ]]; then
        mkdir -p "$models/runs/$n"; rm -rf "$models/runs/$n/final"; cp -r "$d/final" "$models/runs/$n/"
      fi
    done ;;
  in)
    mkdir -p "$src/runs"
    for d in "$dst"/runs/*/; do
      n=$(basename "$d"); [ -f "$src/runs/$n/metrics.json" ] && continue
      if [[ $n == cot-* ]]; then
        if [ ! -d "$models/runs/$n/final" ]; then
          echo "$n: no model in $models/runs/$n/final, not restored: the sweep retrains it" >&2; continue
        fi
        cp -r "$d" "$src/runs/$n"; cp -r "$models/runs/$n/final" "$src/runs/$n/"
      else
        cp -r "$d" "$src/runs/$n"
      fi
    done ;;
  *) echo "usage: $0 out|in SWEEP_DIR KEEP_DIR [MODELS_DIR]" >&2; exit 2 ;;
esac
