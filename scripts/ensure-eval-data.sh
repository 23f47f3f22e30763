#!/usr/bin/env bash
# Installs the Debian photo packages `imgsearch eval` (`make eval`) and the
# whitening fit (`make whitening`) read their pictures from, when missing.
# The list must match imgsearch.evaluation.datasets.PHOTO_PACKAGES.
# mate-backgrounds and libjxl-testdata are reserved for independent checks:
# never add them here.
# Installs with apt-get only when we are root; otherwise says what to install.
set -euo pipefail

packages=(
  plasma-workspace-wallpapers
  gnome-backgrounds
  ukui-wallpapers
  lomiri-wallpapers
  lomiri-wallpapers-16.04
  lomiri-wallpapers-20.04
  sway-backgrounds
  lxqt-themes
  tuxpaint-stamps-default
  tuxpaint-data
  gcompris-qt-data
  dataset-fashion-mnist
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "missing Debian packages for the evaluation: ${missing[*]}" >&2
  echo "install them, e.g.: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi

echo "installing ${missing[*]} with apt-get (about 400 MB)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
