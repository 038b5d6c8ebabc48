#!/usr/bin/env bash
# The install a user gets: build the wheel, install it into a fresh virtualenv with only the 'cpu' extra,
# check that torch and transformers are absent there, and run a model by hub id from a pre-filled cache,
# offline. The cache is filled from the dev environment (.venv, scripts/setup.sh) with a tiny random-weight
# export served by the loopback hub stand-in (scripts/prefill_hub_cache.py); nothing reaches a model hub.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV_VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. "$DEV_VENV/bin/activate"
echo "wheel smoke: building the wheel"
python -m pip wheel --disable-pip-version-check -q --no-deps -w "$work/dist" . 2> >(grep -v "^WARNING: Location" >&2)
wheel=$(ls "$work"/dist/florence2_onnx-*.whl)
echo "wheel smoke: filling a hub cache with a tiny model (onnx-community/Florence-2-base)"
python scripts/prefill_hub_cache.py "$work/cache" --repo onnx-community/Florence-2-base
python -c "from florence2_export.verify import make_test_image; make_test_image(160, 120, seed=1).save('$work/image.png')"
deactivate
unset PYTHONPATH  # only the installed wheel may be imported from here on

echo "wheel smoke: fresh virtualenv with $(basename "$wheel")[cpu]"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --disable-pip-version-check -q "${wheel}[cpu]" \
  2> >(grep -v "^WARNING: Location" >&2)
cd "$work"  # away from the source tree: only the installed package can be imported
wheel_version=$(basename "$wheel" | cut -d- -f2)
says=$("$work/venv/bin/florence2" --version)
[ "$says" = "florence2 $wheel_version" ] \
  || { echo "wheel smoke: 'florence2 --version' says '$says', the wheel is $wheel_version" >&2; exit 1; }
echo "wheel smoke: $says"
"$work/venv/bin/python" - <<'EOF'
import importlib.util, sys
present = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is not None]
sys.exit(f"wheel smoke: {present} installed by the cpu extra" if present else 0)
EOF
HF_HUB_OFFLINE=1 HF_HUB_CACHE="$work/cache" HF_ENDPOINT=http://127.0.0.1:9 \
  "$work/venv/bin/florence2" run florence-2-base "$work/image.png" --task "<CAPTION>" --max-new-tokens 10 \
  > "$work/answer.json"
echo "wheel smoke: florence2 run florence-2-base (offline, from the cache, torch-free install):"
cat "$work/answer.json"
"$work/venv/bin/python" -c "import json, sys; d = json.load(open(sys.argv[1])); assert list(d) == ['<CAPTION>'], d" \
  "$work/answer.json"
echo "wheel smoke: ok"
