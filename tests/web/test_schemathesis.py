"""The HTTP API against its own OpenAPI document, by a property-based tester (schemathesis).

For every operation, schemathesis generates requests from the document (valid
and invalid parameters and bodies, random images, odd ids) and sends them to
the gateway of the session's stack. Checks: no 5xx for any of them, every
status is one the document lists for the operation, and every JSON body
matches its documented schema. Examples are bounded so `make test` stays
quick; `SCHEMATHESIS_EXAMPLES=200 pytest tests/web/test_schemathesis.py`
runs a longer search.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from tests.web.conftest import WebUnderTest

pytestmark = [
    pytest.mark.slow,
    # BMP and TIFF bodies are raw bytes like the JPEG, PNG, WebP and GIF ones it does send.
    pytest.mark.filterwarnings("ignore:Skipped test cases with unsupported payload media types"),
]
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "15"))


def _document() -> dict:
    """The gateway's OpenAPI document, built offline from the app (the served one is the same)."""
    from imgsearch_web.app import create_app
    from imgsearch_web.settings import WebSettings

    return create_app(WebSettings()).openapi()


schema = schemathesis.openapi.from_dict(_document())


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error(case: schemathesis.Case, web: WebUnderTest) -> None:
    case.call_and_validate(
        base_url=web.url,
        checks=[not_a_server_error, status_code_conformance, response_schema_conformance],
        timeout=120,
    )
