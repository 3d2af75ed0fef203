#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine: Debian's QGIS packages, a
# --system-site-packages virtualenv in .venv with pinned dependencies, and the
# plugin made visible to QGIS (as .venv/qgis-plugins/edifice -> this folder).
# Usage: scripts/setup.sh          (then: source scripts/env.sh)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# python3-pyproj (not the PyPI wheel): a wheel's bundled PROJ clashes with the PROJ that qgis_process links (std::bad_alloc);
# proj-bin lets that pyproj find /usr/share/proj from inside the venv. openssl: the tests' self-signed HTTPS stand-ins.
APT_PACKAGES=(qgis python3-qgis qgis-providers python3-venv python3-pip python3-pyproj proj-bin gdal-bin xvfb xauth
              openssl)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv (Debian python3 with system site packages, for the qgis bindings)"
  /usr/bin/python3 -m venv --system-site-packages .venv
fi

stamp=.venv/.requirements.sha256
want="$(sha256sum requirements.lock | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned Python packages (requirements.lock)"
  extra=()
  [ -d /opt/wheels ] && extra+=(--find-links /opt/wheels)
  .venv/bin/python -m pip install -q --disable-pip-version-check "${extra[@]}" -r requirements.lock
  echo "$want" > "$stamp"
fi

# The plugin folder must be named 'edifice' for QGIS and for 'import edifice'.
mkdir -p .venv/qgis-plugins
ln -sfn "$ROOT" .venv/qgis-plugins/edifice
site="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$ROOT/.venv/qgis-plugins" > "$site/edifice-dev.pth"
# the CLI entry point, without a copy of the package
cat > .venv/bin/edifice <<PY
#!$ROOT/.venv/bin/python
import sys
from edifice.core.cli import main
sys.exit(main())
PY
chmod +x .venv/bin/edifice

.venv/bin/python - <<'PY'
import numpy, rasterio, torch, qgis.core
assert numpy.__version__.startswith("1."), "numpy must stay < 2 for Debian's GDAL bindings"
print(f"setup: ok (QGIS {qgis.core.Qgis.QGIS_VERSION}, numpy {numpy.__version__}, rasterio {rasterio.__version__}, torch {torch.__version__})")
PY
