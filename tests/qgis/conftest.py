"""Fixtures for tests in real QGIS (pytest-qgis): the ``edifice`` provider, registered once."""
import pytest


@pytest.fixture(scope="session")
def provider(qgis_app, qgis_processing):
    """The registered ``edifice`` Processing provider (added if the plugin did not add it)."""
    from qgis.core import QgsApplication

    from edifice.processing_algs.provider import EdificeProvider

    reg = QgsApplication.processingRegistry()
    prov = reg.providerById("edifice")
    if prov is None:
        prov = EdificeProvider()
        reg.addProvider(prov)
    yield prov


@pytest.fixture(scope="session")
def auth_manager(qgis_app):
    """QGIS's authentication manager with a master password set (for tests that store secrets)."""
    from qgis.core import QgsApplication

    manager = QgsApplication.authManager()
    if not manager.masterPasswordIsSet():
        assert manager.setMasterPassword("edifice-test-master", True)
    return manager
