#!/usr/bin/env bash
# Sets up corpusmill on a fresh machine: checks Python 3.11+ and Java 17+ (for
# pyspark), creates .venv at the repo root and installs the project with its test
# and benchmark extras. Re-running it is cheap: it reinstalls only when
# pyproject.toml changed. Usage: scripts/setup.sh   (from anywhere)
set -euo pipefail
cd "$(dirname "$0")/.."

py=""
for cand in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
  [ -n "$cand" ] || continue
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    py=$cand; break
  fi
done
if [ -z "$py" ]; then
  echo "setup: corpusmill needs Python 3.11 or newer (found: $(python3 --version 2>&1 || echo none))." >&2
  echo "       Install it (Debian/Ubuntu: apt-get install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

java_major=""
if command -v java >/dev/null 2>&1; then
  java_major=$(java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}')
fi
if [ -z "$java_major" ] || [ "$java_major" -lt 17 ]; then
  echo "setup: pyspark (the Spark runner) needs Java 17 or newer; found: ${java_major:-no java}." >&2
  echo "       Debian/Ubuntu: apt-get install openjdk-17-jre-headless   macOS: brew install openjdk@17" >&2
  echo "       or set JAVA_HOME to a JDK 17+. (CORPUSMILL_SKIP_JAVA_CHECK=1 skips this check.)" >&2
  [ "${CORPUSMILL_SKIP_JAVA_CHECK:-}" = 1 ] || exit 1
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $py"
  "$py" -m venv .venv
fi
stamp=.venv/.corpusmill-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing corpusmill and its dependencies into .venv (a few minutes the first time)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  if ! .venv/bin/python -c 'import torch' 2>/dev/null && ! command -v nvidia-smi >/dev/null 2>&1; then
    # no GPU: take the CPU build of torch (a plain `torch` requirement pulls CUDA wheels, GBs)
    .venv/bin/python -m pip install --quiet 'torch==2.13.0' \
      || .venv/bin/python -m pip install --quiet 'torch==2.13.0' --index-url https://download.pytorch.org/whl/cpu
  fi
  .venv/bin/python -m pip install --quiet -e '.[dev]'
  echo "$want" > "$stamp"
fi
echo "setup: ready (.venv/bin/corpusmill, .venv/bin/pytest)"
