#!/usr/bin/env bash
# Sets up a project-local .venv with exactly the versions CI tested (requirements.lock).
#   bash scripts/setup.sh         runtime only
#   bash scripts/setup.sh --dev   plus pytest, tensorboard, and Chromium (the report test renders in it)
#   --newest                      the newest versions pyproject.toml allows instead of the lock
#                                 (torch stays the locked build); scripts/drift.sh uses it
# PYTHON=python3.12 picks the interpreter; VENV=path picks the venv (default .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
dev=0 newest=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    --newest) newest=1 ;;
    *) echo "setup: unknown option $arg (use --dev, --newest)" >&2; exit 2 ;;
  esac
done
python=${PYTHON:-python3}
venv=${VENV:-.venv}
lock=requirements.lock
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip="$venv/bin/pip"
# pip's own notes on this machine's extra package folders are noise to a user.
quiet() { grep -v -e "^WARNING: Location '" -e "is neither a file nor a directory" >&2 || true; }
"$pip" install -q --upgrade pip 2> >(quiet)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
# torch first, so nothing below pulls a multi-GB CUDA build: the locked CPU build where none is
# installed; a torch already in the venv (your own CUDA build on a GPU machine) is kept.
if ! "$venv/bin/python" -c "import torch" 2>/dev/null; then
  "$pip" install -q "$(grep -i '^torch==' "$lock")" 2> >(quiet)
fi
# The lock (or, with --newest, nothing) for the rest; torch held at what is installed.
[ "$newest" = 1 ] || grep -v -i '^torch==' "$lock" > "$constraints"
echo "torch==$("$venv/bin/python" -W ignore -c 'import torch; print(torch.__version__)')" >> "$constraints"
extras="" upgrade=""
[ "$dev" = 1 ] && extras="[dev]"
[ "$newest" = 1 ] && upgrade="--upgrade"
"$pip" install -q -c "$constraints" $upgrade -e ".$extras" 2> >(quiet)
# The real CLIP BPE vocabulary ships inside open-clip-torch's wheel: the tiny offline bases use it
# so token counts are real. Only that file is taken out of the wheel; installing open_clip would
# bring torchvision (and a second torch) and leave `pip check` unhappy.
share="$venv/share/clood-candy"
if [ ! -f "$share/bpe_simple_vocab_16e6.txt.gz" ]; then
  wheels=$(mktemp -d)
  "$pip" download -q --no-deps -d "$wheels" "$(grep -i '^open-clip-torch==' "$lock")" 2> >(quiet)
  mkdir -p "$share"
  "$venv/bin/python" - "$wheels" "$share" <<'EOF'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("open_clip_torch-*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("open_clip/bpe_simple_vocab_16e6.txt.gz"))
    (pathlib.Path(sys.argv[2]) / "bpe_simple_vocab_16e6.txt.gz").write_bytes(z.read(name))
EOF
  rm -rf "$wheels"
fi
if [ "$dev" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1) \
      || echo "setup: could not install chromium; the report's browser test will be skipped" >&2
  else
    echo "setup: chromium not found; install it for the report's browser test" >&2
  fi
fi
[ "$newest" = 1 ] && from="the newest allowed versions (torch held)" || from="versions from $lock"
echo "setup: done ($venv, $from)"
