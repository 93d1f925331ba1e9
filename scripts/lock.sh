#!/usr/bin/env bash
# Re-resolve the pinned versions in constraints.txt: install dr_hf with every extra, unpinned, in a
# throw-away virtual environment and write what pip chose. Run from the repository root, then
# re-measure the figures the README states (quick start, benchmarks) and commit both together.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="$(mktemp -d)/venv"
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet -e ".[dev,demo,onnx]"
{
  echo "# Versions the README's figures were measured with (scripts/lock.sh writes this file)."
  echo "# Install with: pip install -c constraints.txt -e \".[dev,demo,onnx]\""
  "$venv/bin/python" -m pip freeze --exclude-editable | LC_ALL=C sort -f
} > constraints.txt
rm -rf "$(dirname "$venv")"
echo "constraints.txt: $(grep -vc '^#' constraints.txt) pinned packages"
