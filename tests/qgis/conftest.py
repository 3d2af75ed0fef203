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


@pytest.fixture(scope="session")
def basic_authcfg(auth_manager):
    """Factory: ``basic_authcfg(secret, username="user")`` stores a Basic authentication configuration whose
    password is ``secret`` (how users keep an API key or a service-account key) and returns its id."""
    from qgis.core import QgsAuthMethodConfig

    def store(secret: str, username: str = "user") -> str:
        config = QgsAuthMethodConfig()
        config.setName(f"edifice test {username}")
        config.setMethod("Basic")
        config.setConfig("username", username)
        config.setConfig("password", secret)
        assert auth_manager.storeAuthenticationConfig(config)
        return config.id()

    return store


@pytest.fixture
def recording_feedback():
    """Factory: a QgsProcessingFeedback whose ``lines`` keep every info, warning and error message."""
    from qgis.core import QgsProcessingFeedback

    class Recording(QgsProcessingFeedback):
        def __init__(self):
            super().__init__()
            self.lines = []

        def pushInfo(self, text):  # noqa: N802
            self.lines.append(text)

        def pushWarning(self, text):  # noqa: N802
            self.lines.append(text)

        def pushDebugInfo(self, text):  # noqa: N802
            self.lines.append(text)

        def reportError(self, text, fatal=False):  # noqa: N802
            self.lines.append(text)

    return Recording
