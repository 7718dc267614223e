"""The OpenAPI document, its browsable page, and schemathesis against it (no 5xx, no schema violation)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings

from llama_gpu import Kernel
from llama_gpu.api import create_app
from llama_gpu.api.routing import route_spec

from .conftest import make_settings

schemathesis = pytest.importorskip("schemathesis")

#: Only the deterministic echo model: generated requests must stay cheap and bounded.
ONLY_ECHO = ("llamacpp", "torch", "embedded_models", "local_models")


@pytest.fixture(scope="module")
def echo_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    """An app with auth required, and an admin key for it."""
    settings = make_settings(tmp_path_factory.mktemp("data"), disable_plugins=ONLY_ECHO, auth="required")
    kernel = Kernel(settings).start()
    key = kernel.services["accounts"].create_key("schemathesis", "admin")[1]
    yield create_app(kernel=kernel), key
    kernel.stop()


def test_every_route_is_documented(client: FlaskClient, app: Flask) -> None:
    document = client.get("/api/v1/openapi.json").json
    assert document["openapi"] == "3.0.3" and document["info"]["title"] == "LLaMA GPU"
    undocumented = sorted(
        rule.rule
        for rule in app.url_map.iter_rules()
        if (
            route_spec(app.view_functions[rule.endpoint]) is None
            or re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule) not in document["paths"]
        )
        and rule.endpoint not in ("static", "openapi.assets", "dashboard.static")
    )
    assert undocumented == []
    paths = document["paths"]
    assert {"/v1/chat/completions", "/api/v1/infer", "/api/v1/plugins/{plugin_id}/load", "/health"} <= set(paths)
    chat = paths["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert chat["$ref"].endswith("ChatCompletion")
    infer = paths["/api/v1/infer"]["post"]
    assert {"X-RateLimit-Limit", "Retry-After"} <= set(infer["responses"]["429"]["headers"])
    assert infer["security"] == [{"bearer": []}, {"apiKey": []}]
    assert "security" not in paths["/health"]["get"] and "429" not in paths["/health"]["get"]["responses"]
    schema = document["components"]["schemas"]["ChatCompletion"]
    assert schema["properties"]["n"]["maximum"] == 16 and "messages" in schema["required"]


def test_docs_page_uses_local_assets(client: FlaskClient) -> None:
    page = client.get("/api/v1/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/api/v1/openapi.json" in html and "http" not in html.replace("/api/v1", ""), "no CDN"
    bundle = client.get("/api/v1/docs/assets/swagger-ui-bundle.js")
    assert bundle.status_code == 200 and len(bundle.data) > 100_000
    assert client.get("/api/v1/docs/assets/..%2F..%2F__init__.py").status_code == 404


def test_api_conforms_to_its_document(echo_app: tuple[Flask, str]) -> None:
    """Every operation, a few generated requests each: no 5xx; status codes, content types and bodies
    as documented; invalid data rejected; missing or invalid credentials refused."""
    from hypothesis import given
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    app, key = echo_app
    api_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)
    checked = []
    for result in api_schema.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
        def run(case) -> None:  # type: ignore[no-untyped-def]
            # Semantic checks (unique ids, the server's token limits, known models) answer 4xx for
            # requests the schema alone allows, so "valid data must be accepted" cannot hold.
            case.call_and_validate(
                headers={"Authorization": f"Bearer {key}"}, excluded_checks=[positive_data_acceptance]
            )

        run()
        checked.append(operation.label)
    assert len(checked) >= 25, checked
