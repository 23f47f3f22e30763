"""Test configuration: fixtures live in tests/fixtures/, one module per component."""

pytest_plugins = [
    "tests.fixtures.processes",
    "tests.fixtures.embedder",
    "tests.fixtures.backends",
]
