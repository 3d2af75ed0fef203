#!/usr/bin/env bash
# Build the installable QGIS plugin zip dist/edifice-X.Y.Z.zip (Plugins > Manage and Install Plugins >
# Install from ZIP): one top-level folder edifice/ with only what the plugin needs (no tests,
# benchmarks, samples, scripts or .venv), LICENSE, and metadata.txt completed from these variables:
#   EDIFICE_REPOSITORY  source repository     (default https://github.com/edifice-gis/edifice)
#   EDIFICE_TRACKER     issue tracker         (default $EDIFICE_REPOSITORY/issues)
#   EDIFICE_HOMEPAGE    home page             (default $EDIFICE_REPOSITORY)
#   EDIFICE_EMAIL       maintainer's e-mail   (default edifice-gis@users.noreply.github.com)
#   EDIFICE_VERSION     version               (default: metadata.txt's, which must match pyproject.toml's)
#   EDIFICE_DIST        output folder         (default dist/)
# Files are taken from git (tracked, or new and not ignored), so build junk never gets in.
# Usage: scripts/package.sh            -> prints the zip's path
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REPOSITORY="${EDIFICE_REPOSITORY:-https://github.com/edifice-gis/edifice}"
TRACKER="${EDIFICE_TRACKER:-$REPOSITORY/issues}"
HOMEPAGE="${EDIFICE_HOMEPAGE:-$REPOSITORY}"
EMAIL="${EDIFICE_EMAIL:-edifice-gis@users.noreply.github.com}"
META_VERSION="$(sed -n 's/^version=//p' metadata.txt)"
PY_VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)"
VERSION="${EDIFICE_VERSION:-$META_VERSION}"
if [ "$META_VERSION" != "$PY_VERSION" ]; then
  echo "package: metadata.txt version $META_VERSION differs from pyproject.toml's $PY_VERSION" >&2; exit 1
fi
DIST="${EDIFICE_DIST:-$ROOT/dist}"

# What the plugin needs at run time: the package's code, its data, the example models.
INCLUDE=(__init__.py metadata.txt icon.svg LICENSE README.md core models processing_algs qgis_plugin examples)
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/edifice"
git ls-files -z --cached --others --exclude-standard -- "${INCLUDE[@]}" |
  while IFS= read -r -d '' f; do
    [ -f "$f" ] || continue                                # deleted but still in the index
    case "$f" in */__pycache__/*|*.pyc|*.aux.xml) continue ;; esac
    mkdir -p "$stage/edifice/$(dirname "$f")"
    cp -p "$f" "$stage/edifice/$f"
  done

python3 - "$stage/edifice/metadata.txt" "$VERSION" "$REPOSITORY" "$TRACKER" "$HOMEPAGE" "$EMAIL" <<'PY'
import re, sys
path, version, repository, tracker, homepage, email = sys.argv[1:]
text = open(path, encoding="utf-8").read()
for key, value in (("version", version), ("repository", repository), ("tracker", tracker),
                   ("homepage", homepage), ("email", email)):
    if re.search(rf"^{key}=", text, flags=re.M):
        text = re.sub(rf"^{key}=.*$", lambda m: f"{key}={value}", text, flags=re.M)
    else:
        text = text.replace("[general]\n", f"[general]\n{key}={value}\n", 1)
open(path, "w", encoding="utf-8").write(text)
PY

mkdir -p "$DIST"
zip_path="$DIST/edifice-$VERSION.zip"
rm -f "$zip_path"
(cd "$stage" && python3 - "$zip_path" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as z:
    for folder, _, files in sorted(os.walk("edifice")):
        for name in sorted(files):
            z.write(os.path.join(folder, name))
PY
)
echo "$zip_path"
