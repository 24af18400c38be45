"""The sandbox: the paper's pass/fail rule, and a hostile program suite per language family
(fork bombs, loops, memory hogs, huge output, writes elsewhere, network, reading the host
environment, signalling the harness) that must all get fail verdicts with no escape."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from harness.sandbox import SANDBOX_UID, Limits, execute, isolation
from hostile.programs import BENIGN, FAMILIES  # tests/ is on sys.path (rootdir conftest)

REQUIRE = os.environ.get("HARNESS_REQUIRE_TOOLCHAINS") == "1"  # CI: a missing toolchain fails
SECRET = "harness-secret-7f3a9c"


def _toolchain(family: str) -> None:
    binary = {"go": "go", "shell": "bash"}.get(family, FAMILIES[family][1][0])
    if shutil.which(binary) is None:
        if REQUIRE:
            pytest.fail(f"{binary} is not installed (scripts/install.sh installs the toolchains)")
        pytest.skip(f"{binary} not installed")


def _sandbox_processes() -> list[int]:
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        zombie = fields.get("State", "").strip().startswith("Z")  # dead, waiting to be reaped: harmless
        if fields.get("Uid", "").split()[:1] == [str(SANDBOX_UID)] and not zombie:
            pids.append(int(status.parent.name))
    return pids


def test_isolation_is_complete_when_running_as_root():
    if os.geteuid() != 0:
        pytest.skip("namespaces and the uid switch need root; the sandbox falls back to rlimits")
    assert {"netns", "mountns-readonly", "pidns", "uid", "rlimits"} <= set(isolation())


def test_pass_fail_rule_follows_the_paper(tmp_path):
    assert execute(["python3", "-c", "print('ok')"]).passed
    stderr_only = execute(["python3", "-c", "import sys; sys.stderr.write('warning')"])
    assert stderr_only.exit_code == 0 and not stderr_only.passed and stderr_only.error == "warning"
    assert not execute(["python3", "-c", "raise SystemExit(3)"]).passed
    result = execute(["python3", "main.py"], {"main.py": "open('out.txt', 'w').write('inside'); print(open('out.txt').read())"})
    assert result.passed and result.stdout == "inside\n"  # the run's own directory is writable
    assert execute(["python3", "-c", "import sys; print(sys.stdin.read().upper())"], stdin="abc").stdout == "ABC\n"
    missing = execute(["no-such-binary-xyz"])
    assert not missing.passed and "cannot run" in missing.stderr
    with pytest.raises(ValueError, match="escapes"):
        execute(["true"], {"../evil.txt": "x"})


def _limits(family: str) -> Limits:
    wall = FAMILIES[family][3]
    return Limits(wall_s=wall, cpu_s=int(wall) + 5, memory_mb=2048 if family in ("go", "java") else 1024, processes=32)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_toolchain_runs_a_benign_program(family):
    _toolchain(family)
    filename, command, _, _ = FAMILIES[family]
    result = execute(command, {filename: BENIGN[family]}, _limits(family))
    assert result.passed and result.stdout == "hello\n", result


CASES = [(family, behaviour) for family, (_, _, programs, _) in FAMILIES.items() for behaviour in programs]


@pytest.mark.parametrize("family,behaviour", CASES, ids=[f"{f}-{b}" for f, b in CASES])
def test_hostile_program_gets_a_fail_verdict_and_escapes_nothing(family, behaviour, tmp_path, monkeypatch):
    _toolchain(family)
    monkeypatch.setenv("HARNESS_TEST_SECRET", SECRET)
    filename, command, programs, wall = FAMILIES[family]
    marker = tmp_path / f"escaped-{family}-{behaviour}"
    source = programs[behaviour].replace("{marker}", str(marker)).replace("{harness_pid}", str(os.getpid())).replace("{secret}", SECRET)
    limits = _limits(family)
    began = time.monotonic()
    result = execute(command, {filename: source}, limits)
    assert not result.passed, f"{family} {behaviour} passed: {result}"
    assert time.monotonic() - began < wall + 5
    assert not marker.exists(), "wrote outside its directory"
    assert SECRET not in result.stdout + result.stderr
    os.kill(os.getpid(), 0)  # the harness is alive
    if behaviour == "infinite_loop":
        assert result.timed_out
    if behaviour == "huge_output":
        assert result.output_truncated or result.timed_out
        assert len(result.stdout) <= limits.output_bytes
    if "pidns" in isolation():
        deadline = time.monotonic() + 10
        while _sandbox_processes() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _sandbox_processes() == [], "processes outlived the run"
