"""Test configuration: fixtures live in tests/fixtures/, one module per component."""

import os

import pytest

pytest_plugins = [
    "tests.fixtures.processes",
    "tests.fixtures.embedder",
    "tests.fixtures.backends",
    "tests.fixtures.stack",
]

# The services are secure by default (TLS and tokens). Most tests exercise
# other behaviour over loopback and ask for plaintext and no auth here, in the
# environment, which the services' settings and child processes read;
# tests/security passes its own TLS and auth settings explicitly.
OPEN_LOOPBACK_ENV = {
    "EMBEDDER_TLS_MODE": "plaintext",
    "EMBEDDER_AUTH_MODE": "none",
    "SEARCH_TLS_MODE": "plaintext",
    "SEARCH_AUTH_MODE": "none",
    "SEARCH_EMBEDDER_TLS_MODE": "plaintext",
}


def pytest_configure(config: pytest.Config) -> None:
    for name, value in OPEN_LOOPBACK_ENV.items():
        os.environ.setdefault(name, value)
