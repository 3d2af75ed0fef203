"""Secrets from QGIS's authentication database (EdificeAlgorithm.secret_from_authcfg)."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.qgis


def _store(manager, method: str, values: dict) -> str:
    from qgis.core import QgsAuthMethodConfig

    config = QgsAuthMethodConfig()
    config.setName(f"edifice test {method}")
    config.setMethod(method)
    for key, value in values.items():
        config.setConfig(key, value)
    assert manager.storeAuthenticationConfig(config)
    return config.id()


def test_basic_config_password_is_the_secret(auth_manager):
    from edifice.processing_algs.base import EdificeAlgorithm

    cfg = _store(auth_manager, "Basic", {"username": "me", "password": "tile-key-42"})
    assert EdificeAlgorithm.secret_from_authcfg(cfg, "AUTHCFG") == "tile-key-42"
    assert EdificeAlgorithm.secret_from_authcfg("", "AUTHCFG") is None


def test_unknown_config_is_a_clear_error_without_secrets(auth_manager):
    from qgis.core import QgsProcessingException

    from edifice.processing_algs.base import EdificeAlgorithm

    with pytest.raises(QgsProcessingException, match="AUTHCFG: authentication configuration 'nope123' was not"):
        EdificeAlgorithm.secret_from_authcfg("nope123", "AUTHCFG")
