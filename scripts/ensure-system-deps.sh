#!/usr/bin/env bash
# Installs the system packages imgsearch needs when they are missing:
# redis-server (the query cache, and the tests' Redis), openssl (scripts/k8s-secrets.sh
# and its tests), Debian's Fashion-MNIST data set (sample images for `make demo`)
# and Chromium (the web page's browser tests drive it with Playwright; never
# `playwright install`).
# Installs with apt-get only when we are root; otherwise says what to install.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages: ${missing[*]}" >&2
  echo "install them, e.g.: sudo apt-get install -y ${missing[*]}" >&2
  # redis-server and openssl are required; the data set is optional sample data,
  # and Chromium is needed by the browser tests only.
  command -v redis-server >/dev/null 2>&1 || exit 1
  command -v openssl >/dev/null 2>&1 || exit 1
  exit 0
fi

echo "installing ${missing[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# Debian starts the packaged redis service; imgsearch runs its own servers.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
