# Source me after scripts/setup.sh: headless QGIS settings for qgis_process and pytest.
EDIFICE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$EDIFICE_ROOT/.venv/bin:$PATH"          # QGIS's embedded Python then sees the venv
export QT_QPA_PLATFORM=offscreen
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d /tmp/edifice-xdg.XXXXXX)}"
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true
export QGIS_PLUGINPATH="$EDIFICE_ROOT/.venv/qgis-plugins"
export QGIS_CUSTOM_CONFIG_PATH="${QGIS_CUSTOM_CONFIG_PATH:-$(mktemp -d /tmp/edifice-qgis-profile.XXXXXX)}"
export QGIS_PROCESS=/usr/bin/qgis_process.bin        # the Debian wrapper /usr/bin/qgis_process is broken
# enable the plugin in this profile (qgis_process runs only enabled plugins)
"$QGIS_PROCESS" plugins enable edifice >/dev/null 2>&1 || true
