"""The README's walkthrough and minimal MC run as written, so that neither can rot.

The walkthrough is every ```console block between `<!-- walkthrough -->` and `<!-- /walkthrough -->`: `$ ` starts
a command (a trailing backslash continues it), the lines up to the next command are its answer. Commands run in
bash against the live server, with only the base URL changed; `$ NAME=...   # the FIELD above` takes FIELD from
the previous answer. An answer shows the status line, headers that must be present, and a JSON body whose every
field (nested ones too) must be in the real answer with the value shown; a string with `...` matches any value
starting with what comes before it.

The minimal MC is examples/minimal_mc.py, shown in the README between `<!-- minimal-mc -->` markers; it runs as
a subprocess against the real gRPC server with a service credential, and the join of the walkthrough is placed
on it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from accounts.services.service_tokens import service_credential_create
from controllers.models import HealthStatus, MeetingController
from tests.factories import make_controller
from tools.devenv import ROOT

pytestmark = pytest.mark.slow

README = ROOT / "README.md"
EXAMPLE = ROOT / "examples" / "minimal_mc.py"
README_BASE_URL = "http://127.0.0.1:8000"
_CAPTURE = re.compile(r"^(\w+)=\S*\s+# the (\w+) above$")


@dataclass
class Step:
    command: str
    answer: list[str]


def marked(text: str, name: str) -> str:
    start, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    assert text.count(start) == 1 and text.count(end) == 1, f"README must mark one {name} section"
    return text.split(start, 1)[1].split(end, 1)[0]


def walkthrough_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    for block in re.findall(r"```console\n(.*?)```", marked(text, "walkthrough"), re.S):
        lines = block.splitlines()
        while lines:
            line = lines.pop(0)
            assert line.startswith("$ "), f"an answer line before any command: {line!r}"
            command = line[2:]
            while command.endswith("\\"):
                command = command[:-1] + lines.pop(0).strip()
            answer = []
            while lines and not lines[0].startswith("$ "):
                answer.append(lines.pop(0))
            steps.append(Step(command, answer))
    return steps


def matches(shown: Any, real: Any) -> bool:
    if isinstance(shown, str) and "..." in shown:
        return isinstance(real, str) and real.startswith(shown.split("...", 1)[0])
    if isinstance(shown, dict):
        return isinstance(real, dict) and all(key in real and matches(value, real[key]) for key, value in shown.items())
    if isinstance(shown, list):
        return isinstance(real, list) and len(shown) == len(real) and all(map(matches, shown, real))
    return type(shown) is type(real) and shown == real


def check_answer(step: Step, output: str) -> dict[str, Any]:
    """The answer's JSON body, once its status, headers and fields are as the README shows them."""
    head, _, body = output.replace("\r\n", "\n").partition("\n\n")
    status_line, *header_lines = head.splitlines()
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in header_lines)}
    shown_status, *shown_rest = step.answer
    assert status_line.split()[1] == shown_status.split()[1], (step.command, output)
    blank = shown_rest.index("")
    for name, _, value in (line.partition(": ") for line in shown_rest[:blank]):
        assert name.lower() in headers and matches(value, headers[name.lower()]), (step.command, name, headers)
    real = json.loads(body)
    shown = json.loads("\n".join(shown_rest[blank + 1:]))
    assert matches(shown, real), (step.command, shown, real)
    return real


def run_walkthrough(steps: list[Step], *, base_url: str, cwd: Path) -> list[dict[str, Any]]:
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/")}
    answers: list[dict[str, Any]] = []
    for step in steps:
        command = step.command.replace(README_BASE_URL, base_url)
        captured = _CAPTURE.match(command)
        if captured:
            env[captured[1]] = answers[-1][captured[2]]
            continue
        assignment = re.match(r"^(\w+)=(.*)$", command)
        script = f'{command}; printf %s "${assignment[1]}"' if assignment else command
        done = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (step.command, done.stderr)
        if assignment:
            assert not step.answer, step
            env[assignment[1]] = done.stdout
        else:
            answers.append(check_answer(step, done.stdout))
    return answers


def run_minimal_mc(*, http: str, grpc_port: int, client_id: str, client_secret: str) -> str:
    env = {**os.environ, "CLIENT_ID": client_id, "CLIENT_SECRET": client_secret}
    done = subprocess.run(
        [sys.executable, "examples/minimal_mc.py", "--http", http, "--grpc", f"127.0.0.1:{grpc_port}", "--beats", "2",
         "--interval", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_readme_shows_the_minimal_mc_as_it_is_in_examples():
    shown = re.search(r"```python\n(.*?)```", marked(README.read_text(), "minimal-mc"), re.S)
    assert shown and shown[1] == EXAMPLE.read_text()


def test_the_minimal_mc_registers_and_beats_then_the_walkthrough_runs_as_written(
    live_server, grpc_server, settings, tmp_path
):
    credential = service_credential_create(name="minimal mc", scopes=["mc:register"])
    output = run_minimal_mc(http=live_server.url, grpc_port=grpc_server.port,
                            client_id=credential.credential.client_id, client_secret=credential.client_secret)
    assert output.splitlines() == [
        "registered mc-example-1 in us-east-1: accepted=True",
        "heartbeat 1: acknowledged=True",
        "heartbeat 2: acknowledged=True",
    ]
    controller = MeetingController.objects.get(controller_id="mc-example-1")
    assert (controller.region, controller.health_status, controller.owner_client_id) == (
        "us-east-1", HealthStatus.HEALTHY, credential.credential.client_id)

    # The dev superuser as `make run` creates it, its password kept where the walkthrough reads it.
    settings.DEBUG, settings.DATA_DIR, settings.DEV_SUPERUSER_PASSWORD = True, str(tmp_path / ".data"), ""
    call_command("ensure_dev_superuser", stdout=io.StringIO())
    make_controller(region="eu-west-1", health=HealthStatus.UNHEALTHY)  # a known region, nothing placeable

    steps = walkthrough_steps(README.read_text())
    answers = run_walkthrough(steps, base_url=live_server.url, cwd=tmp_path)

    assert len(answers) == 5
    assert answers[2]["controller_id"] == "mc-example-1"


def test_a_readme_answer_that_differs_from_the_real_one_fails():
    """The comparison can fail: a renamed field, another value, another status."""
    real = {"participant": {"role": "host"}, "controller_id": "mc-example-1", "expires_in": 300}
    assert matches({"participant": {"role": "host"}, "controller_id": "mc-..."}, real)
    assert not matches({"participant": {"rol": "host"}}, real)
    assert not matches({"controller_id": "mh-..."}, real)
    assert not matches({"expires_in": "300"}, real)
    step = Step("curl", ["HTTP/1.1 201 Created", "", '{"expires_in": 300}'])
    check_answer(step, 'HTTP/1.1 201 Created\r\nLocation: /x\r\n\r\n{"expires_in": 300}')
    with pytest.raises(AssertionError):
        check_answer(step, 'HTTP/1.1 200 OK\r\n\r\n{"expires_in": 300}')
    with pytest.raises(AssertionError):
        check_answer(Step("curl", ["HTTP/1.1 201 Created", "Location: /x", "", "{}"]), "HTTP/1.1 201 Created\r\n\r\n{}")
