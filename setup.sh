#!/usr/bin/env bash
# Set up auden-kit in a virtual environment: ./setup.sh [--python PATH] [--venv DIR] [--extras LIST] [--force]
set -euo pipefail

usage() {
  cat <<'TXT'
Usage: ./setup.sh [options]

Creates a virtual environment, installs auden-kit (editable) with its test
extras, and checks that torch, torchaudio's compiled ops, lhotse,
sentencepiece and espeak-ng all load. A second run checks and exits quickly.

Options:
  --python PATH   Python interpreter to build the venv with (>= 3.10; default: python3)
  --venv DIR      Where the venv goes (default: .venv)
  --extras LIST   Comma-separated extras to install (default: test; e.g. test,onnx)
  --force         Reinstall even if nothing changed
  -h, --help      Show this help

Examples:
  ./setup.sh
  ./setup.sh --python python3.11 --venv ~/venvs/auden --extras test
TXT
}

PYTHON=python3
VENV=.venv
EXTRAS=test
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --python) PYTHON="$2"; shift 2 ;;
    --venv) VENV="$2"; shift 2 ;;
    --extras) EXTRAS="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "setup.sh: unknown option '$1' (see ./setup.sh --help)" >&2; exit 2 ;;
  esac
done

cd "$(dirname "$0")"
die() { echo "setup.sh: $*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "no Python interpreter '$PYTHON' (pass --python PATH)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "$("$PYTHON" -V 2>&1) is too old: auden-kit needs Python >= 3.10 (pass --python PATH)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "==> creating virtual environment in $VENV"
  "$PYTHON" -m venv "$VENV" || die "could not create a venv in $VENV (on Debian/Ubuntu: apt-get install python3-venv)"
fi
PY="$VENV/bin/python"

stamp="$VENV/.auden-kit-setup"
want="$(cat pyproject.toml | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())') extras=$EXTRAS"
if [ "$FORCE" = 1 ] || [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "==> installing auden-kit[$EXTRAS] (editable); the first time this fetches torch (a few GB)"
  # torch's CUDA build and its libraries take ~6 GB in the venv; say so before pip fills the disk.
  free_kb=$(df -Pk "$VENV" 2>/dev/null | awk 'NR==2 {print $4}')
  if [ -n "${free_kb:-}" ] && [ "$free_kb" -lt 8000000 ]; then
    echo "setup.sh: warning: only $((free_kb / 1024)) MB free where $VENV lives; the install needs ~7 GB" >&2
  fi
  "$PY" -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  log="$VENV/pip-install.log"
  if ! "$PY" -m pip install -e ".[$EXTRAS]" >"$log" 2>&1; then
    grep -v -E "^WARNING: Location" "$log" | tail -25 >&2
    if grep -q "No space left on device" "$log"; then
      die "the disk filled up while installing (df -h $VENV); free ~7 GB or pass --venv DIR on a larger disk, then rerun ./setup.sh"
    fi
    die "pip could not install auden-kit[$EXTRAS] (full log: $log)"
  fi
  rm -f "$stamp"
else
  echo "==> auden-kit already installed in $VENV (use --force to reinstall)"
fi

echo "==> checking the installation"
"$PY" - <<'PYCHECK' || exit 1
import sys

def fail(msg):
    print(f"setup.sh: {msg}", file=sys.stderr)
    sys.exit(1)

try:
    import torch
except Exception as e:
    fail(f"torch does not import ({e}); reinstall with ./setup.sh --force")
try:
    import torchaudio
    import torchaudio.functional as AF
    logits = torch.randn(1, 4, 3, 5)
    AF.rnnt_loss(logits, torch.tensor([[1, 2]], dtype=torch.int32), torch.tensor([4], dtype=torch.int32),
                 torch.tensor([2], dtype=torch.int32), blank=0)
except Exception as e:
    text = str(e)
    hint = ""
    if "libc10_cuda" in text or "+cpu" in torch.__version__:
        hint = (f"\n  torch {torch.__version__} is a CPU-only build, but torchaudio's wheels from PyPI are built"
                " against the CUDA build of torch and need libc10_cuda.so.\n  Fix: install the default torch"
                " build from PyPI (pip install --force-reinstall 'torch==<same version>' without a CPU index),"
                "\n  or install torchaudio from the same CPU index your torch came from.")
    fail(f"torchaudio's compiled ops do not load: {text.splitlines()[0] if text else e!r}{hint}")
try:
    import lhotse
    import sentencepiece  # noqa: F401
except Exception as e:
    fail(f"a data dependency does not import ({e}); reinstall with ./setup.sh --force")
try:
    from auden_kit.data.corpora.espeak import get_synth
    s = get_synth()
    wav = s.synthesize("setup check", voice="en-us")
    assert len(wav) > 1000, "espeak-ng returned no audio"
except Exception as e:
    fail(f"espeak-ng (from the espeakng-loader wheel) does not synthesize: {e}")
try:
    import k2  # noqa: F401
    k2_state = "present (optional)"
except Exception:
    k2_state = "not installed (optional; the pure-PyTorch path is used)"
print(f"    torch {torch.__version__}, torchaudio {torchaudio.__version__}, lhotse {lhotse.__version__}")
print(f"    CUDA available: {torch.cuda.is_available()}   CPU threads: {torch.get_num_threads()}")
print(f"    k2: {k2_state}")
print(f"    espeak-ng: {s.sample_rate} Hz")
PYCHECK
echo "$want" > "$stamp"
echo "==> ready. Activate with: source $VENV/bin/activate   (or call $VENV/bin/auden-kit)"
