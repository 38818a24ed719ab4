"""Schema-driven fuzzing (schemathesis) of every documented endpoint: no input gets a 5xx.

/api/v1/start and /api/v1/stop (and the original API's /api/start, /api/stop) are left out:
generated calls would spawn flow processes.
"""

from __future__ import annotations

from pathlib import Path

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


# The schema is the app's own (static: it does not depend on the store); calls go to the real server.
schema = schemathesis.openapi.from_dict(create_app(load_config(ROOT / "pipeline.yaml")).openapi())


@schema.exclude(path_regex=r"^/api(/v1)?/(start|stop)$").parametrize()
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_generated_input_gets_a_server_error(case, fuzz_api: ApiServer) -> None:
    case.call_and_validate(base_url=fuzz_api.url, checks=[not_a_server_error], timeout=30)
