"""Schema-driven fuzzing (schemathesis) of every documented endpoint, and stateful sequences over
the alert endpoints following the schema's OpenAPI links: no input gets a 5xx.

/api/v1/start and /api/v1/stop (and the original API's /api/start, /api/stop) are left out:
generated calls would spawn flow processes.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import schemathesis
from api_support import ApiServer, api_server
from flow_support import ROOT, SAMPLE, run_flow, write_config
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from store_support import BACKENDS, new_store

from api.app import create_app
from ticklens.config import load_config

SMALL = [SAMPLE / "um_btcusdt_20240718_trades.gz", SAMPLE / "um_ethusdt_20240718_trades.gz"]


@pytest.fixture(scope="module", params=BACKENDS)
def fuzz_api(request, tmp_path_factory) -> ApiServer:
    """The API over a small store, on each backend in turn."""
    tmp: Path = tmp_path_factory.mktemp(f"fuzz_{request.param}")
    store = new_store(request.param, tmp)
    config = write_config(
        tmp, source={"kind": "replay", "paths": [str(p) for p in SMALL], "speed": "max"}, store=store.config()
    )
    done = run_flow(config, "--no-recovery")
    assert done.returncode == 0, done.stderr[-3000:]
    with api_server(config, tmp / "uvicorn.log") as server:
        yield server


def _delete_every_rule(base_url: str) -> None:
    for rule in httpx.get(f"{base_url}/api/v1/alerts", timeout=30).json()["alerts"]:
        assert httpx.delete(f"{base_url}/api/v1/alerts/{rule['id']}", timeout=30).status_code in (204, 404)


def test_alert_call_sequences_following_the_links_get_no_server_error(fuzz_api: ApiServer) -> None:
    """Schemathesis' state machine: create rules, then get, patch and delete them by the id
    the create answered with (the OpenAPI links), in generated orders and bodies."""
    alerts = schema.include(path_regex=r"^/api(/v1)?/alerts")
    reached: list[tuple[str, int]] = []  # (operation, status) of calls on an existing rule

    class Alerts(alerts.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            # Every scenario starts from no rules: hypothesis replays a scenario (to shrink or to
            # check it) and must see the same answers, which rules left by the scenarios before
            # it (or by other tests on this server) would change: FlakyStrategyDefinition.
            _delete_every_rule(fuzz_api.url)

        def get_call_kwargs(self, case):  # noqa: ANN001, ANN202
            return {"base_url": fuzz_api.url, "timeout": 30}

        def after_call(self, response, case) -> None:  # noqa: ANN001
            super().after_call(response, case)
            if "{alert_id}" in case.operation.path and response.status_code < 300:
                reached.append((f"{case.method} {case.operation.path}", response.status_code))

        def validate_response(self, response, case, additional_checks=None, **kwargs) -> None:  # noqa: ANN001
            case.validate_response(response, checks=[not_a_server_error], transport_kwargs=kwargs or None)

    Alerts.run(
        settings=settings(
            # Derandomized: the draws follow the schema, and with the book and microstructure
            # endpoints in it 25 scenarios created and deleted rules but never got or patched one.
            max_examples=60,
            stateful_step_count=6,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
        )
    )
    # The links were followed: operations on a real rule answered 2xx, not just 404s/422s.
    kinds = {op for op, _ in reached}
    assert any(k.startswith("DELETE") for k in kinds) and any(k.startswith(("GET", "PATCH")) for k in kinds), kinds


# The schema is the app's own (static: it does not depend on the store); calls go to the real server.
schema = schemathesis.openapi.from_dict(create_app(load_config(ROOT / "pipeline.yaml")).openapi())


@schema.exclude(path_regex=r"^/api(/v1)?/(start|stop)$").parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_generated_input_gets_a_server_error(case, fuzz_api: ApiServer) -> None:
    case.call_and_validate(base_url=fuzz_api.url, checks=[not_a_server_error], timeout=30)


def test_every_create_links_to_the_rules_own_operations() -> None:
    raw = create_app(load_config(ROOT / "pipeline.yaml")).openapi()
    v1 = raw["paths"]["/api/v1/alerts"]["post"]["responses"]["201"]["links"]
    assert sorted(link["operationId"].split("_")[0] for link in v1.values()) == ["delete", "get", "patch"]
    assert {link["parameters"]["alert_id"] for link in v1.values()} == {"$response.body#/id"}
    compat = raw["paths"]["/api/alerts"]["post"]["responses"]["200"]["links"]
    assert [link["parameters"]["alert_id"] for link in compat.values()] == ["$response.body#/alert_id"]
