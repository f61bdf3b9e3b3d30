#!/usr/bin/env bash
# Makes the peers' virtual environments the benchmarks compare against, beside the project's
# .venv (idempotent: a venv whose pinned versions already import is left as it is):
#  - .venv-flower:  Flower 1.42 (simulation extra: Ray) + torch 2.13 (CPU) + scikit-learn
#  - .venv-nvflare: NVIDIA FLARE 2.9.0 + torch 2.13 (CPU) + scikit-learn
# torch is installed first and pinned, so neither peer pulls a CUDA build of torch.
#
#     bash benchmarks/setup-peers.sh [flower] [nvflare]     # both when none is named
set -euo pipefail
cd "$(dirname "$0")/.."

peer() {  # peer VENV PACKAGE VERSION PIP-SPEC
  local venv=$1 package=$2 version=$3 spec=$4
  if "$venv/bin/python" -c "import importlib.metadata as m, sklearn, torch; \
assert m.version('$package') == '$version' and torch.__version__.startswith('2.13.0')" \
      2>/dev/null; then
    echo "$venv: $package $version already installed"
    return
  fi
  echo "$venv: installing $spec (a few minutes)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q torch==2.13.0
  "$venv/bin/pip" install -q "$spec" torch==2.13.0 scikit-learn
}

want=("$@")
[ ${#want[@]} -eq 0 ] && want=(flower nvflare)
for name in "${want[@]}"; do
  case $name in
    flower) peer .venv-flower flwr 1.42.0 "flwr[simulation]==1.42.0" ;;
    nvflare) peer .venv-nvflare nvflare 2.9.0 "nvflare==2.9.0" ;;
    *) echo "unknown peer $name (flower, nvflare)" >&2; exit 2 ;;
  esac
done
