"""The sandbox: the paper's pass/fail rule, and a hostile program suite per language family
(fork bombs, loops, memory hogs, huge output, writes elsewhere, network, reading the host
environment, signalling the harness) that must all get fail verdicts with no escape."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from conftest import MIRROR, REPO
from hostile.programs import BENIGN, FAMILIES, SNOOP  # tests/ is on sys.path (rootdir conftest)

from harness import sandbox
from harness.sandbox import SANDBOX_UID, Limits, execute, isolation

REQUIRE = os.environ.get("HARNESS_REQUIRE_TOOLCHAINS") == "1"  # CI: a missing toolchain fails
SECRET = "harness-secret-7f3a9c"


def _toolchain(family: str) -> None:
    binary = {"go": "go", "shell": "bash"}.get(family, FAMILIES[family][1][0])
    if shutil.which(binary) is None:
        if REQUIRE:
            pytest.fail(f"{binary} is not installed (scripts/install.sh installs the toolchains)")
        pytest.skip(f"{binary} not installed")


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the command name may hold spaces and parentheses


def _other_workers() -> set[int]:
    """Under pytest-xdist, the other workers: siblings of this process, whose own sandboxed
    programs must not count against this test. An escaped program is reparented to init (or
    a subreaper), so it no longer descends from any of them and is still counted."""
    siblings = {int(p.parent.name) for p in Path("/proc").glob("[0-9]*/stat") if _parent(int(p.parent.name)) == os.getppid()}
    return siblings - {os.getpid()}


def _descends_from(pid: int, ancestors: set[int]) -> bool:
    seen: set[int] = set()
    current: int | None = pid
    while current and current not in seen:
        if current in ancestors:
            return True
        seen.add(current)
        current = _parent(current)
    return False


def _sandbox_processes() -> list[int]:
    others = _other_workers()
    pids = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            text = status.read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        zombie = fields.get("State", "").strip().startswith("Z")  # dead, waiting to be reaped: harmless
        pid = int(status.parent.name)
        if fields.get("Uid", "").split()[:1] == [str(SANDBOX_UID)] and not zombie and not _descends_from(pid, others):
            pids.append(pid)
    return pids


def test_isolation_is_complete_when_running_as_root():
    if os.geteuid() != 0:
        pytest.skip("namespaces and the uid switch need root; the sandbox falls back to rlimits")
    assert set(isolation()) == set(sandbox.FULL_ISOLATION) and sandbox.missing_isolation() == ()


def _needs_tree() -> None:
    if "minimal-root" not in isolation():
        if REQUIRE and os.geteuid() == 0:
            pytest.fail("running as root, but the sandbox could not build its minimal tree")
        pytest.skip("the minimal tree needs root and mount namespaces")


TREE_ROOT = {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "sbin", "tmp", "usr"}


def test_a_program_sees_only_the_minimal_tree():
    _needs_tree()
    from harness.store import default_runs_dir
    from harness.zoo import cache_dir

    host = [str(REPO), str(Path.home()), str(MIRROR), str(cache_dir()), str(default_runs_dir().resolve()),
            "/home", "/root", "/work", "/opt", "/var", "/srv", "/mnt", "/media", "/run", "/sys", "/boot"]
    program = (
        "import json, os\n"
        "print(json.dumps({'root': sorted(os.listdir('/')), 'etc': sorted(os.listdir('/etc')), 'dev': sorted(os.listdir('/dev')),"
        " 'tmp': sorted(os.listdir('/tmp')), 'cwd': os.getcwd(), 'pids': sorted(p for p in os.listdir('/proc') if p.isdigit()),"
        " 'fds': sorted(os.listdir('/proc/self/fd')),"
        f" 'visible': [p for p in {host!r} if os.path.exists(p)]}}))\n"
    )
    result = execute(["python3", "main.py"], {"main.py": program})
    assert result.passed, result
    seen = json.loads(result.stdout)
    assert set(seen["root"]) <= TREE_ROOT and {"usr", "etc", "dev", "proc", "tmp"} <= set(seen["root"]), seen["root"]
    allowed_etc = {Path(p).name for p in sandbox.BASE_READS if p.startswith("/etc/")} | {"passwd", "group"}
    assert set(seen["etc"]) <= allowed_etc, seen["etc"]
    assert set(seen["dev"]) == {"null", "zero", "random", "urandom", "full", "fd", "stdin", "stdout", "stderr"}
    assert seen["visible"] == [], "the program sees host folders"
    assert len(seen["pids"]) <= 2  # the namespace's init and the program itself
    assert set(seen["fds"]) <= {"0", "1", "2", "3"}  # stdin, stdout, stderr (3: the listing's own handle)
    assert Path(seen["cwd"]).name.startswith("harness-sandbox-")


@pytest.fixture
def planted():
    """World-readable files holding the secret in the checkout, in $HOME and in /tmp."""
    name = f".sandbox-planted-{uuid.uuid4().hex[:8]}"
    paths = [REPO / name, Path.home() / name, Path(tempfile.gettempdir()) / name]
    for path in paths:
        path.write_text(f"{SECRET}\n")
        path.chmod(0o644)
    yield paths
    for path in paths:
        path.unlink(missing_ok=True)


def _snoop(family: str, planted: list[Path]) -> str:
    return (SNOOP[family].replace("{planted}", ",".join(map(str, planted))).replace("{harness_pid}", str(os.getpid()))
            .replace("{secret}", SECRET))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_a_program_reads_nothing_of_the_host(family, planted, monkeypatch):
    _toolchain(family)
    _needs_tree()
    monkeypatch.setenv("HARNESS_TEST_SECRET", SECRET)
    filename, command, _, _ = FAMILIES[family]
    result = execute(command, {filename: _snoop(family, planted)}, _limits(family), reads=_reads(family))
    assert SECRET not in result.stdout + result.stderr
    # It ran to its end (no crash, no build error) and found nothing: planted files, the
    # harness's /proc, inherited descriptors, links, ptrace all failed.
    assert (result.exit_code, result.stderr.strip()) == (1, ""), result
    assert result.stdout.strip() == ""


def test_without_the_tree_the_same_program_reads_the_host(planted, monkeypatch):
    """The hostile program is not vacuous: on the read-only host file system (the sandbox
    before the minimal tree) it finds the file planted in /tmp and prints it."""
    _needs_tree()
    monkeypatch.setattr(sandbox, "isolation", lambda: tuple(p for p in sandbox.FULL_ISOLATION if p != "minimal-root"))
    result = execute(["python3", "main.py"], {"main.py": _snoop("python", planted)})
    assert result.passed and SECRET in result.stdout and str(planted[2]) in result.stdout, result


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


def _reads(family: str) -> tuple[str, ...]:
    """What the family's toolchain may read: its code-repair language's declaration."""
    from tasks.code_languages import LANGUAGES

    return LANGUAGES[family].reads if family in LANGUAGES else ()


def _limits(family: str) -> Limits:
    """The family's code-repair memory limit: the JVM reserves more address space on a machine
    with more cores (compiler and GC threads), so a test's own smaller figure failed on CI."""
    from tasks.code_languages import LANGUAGES

    wall = FAMILIES[family][3]
    memory_mb = LANGUAGES[family].memory_mb if family in LANGUAGES else 1024
    return Limits(wall_s=wall, cpu_s=int(wall) + 5, memory_mb=memory_mb, processes=32)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_toolchain_runs_a_benign_program(family):
    _toolchain(family)
    filename, command, _, _ = FAMILIES[family]
    result = execute(command, {filename: BENIGN[family]}, _limits(family), reads=_reads(family))
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
    result = execute(command, {filename: source}, limits, reads=_reads(family))
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


def test_code_repair_says_in_one_line_what_this_machine_cannot_isolate(mirror, monkeypatch, capsys):
    from harness.data import DataStore
    from harness.runner import make_task

    task = make_task("code-repair", {"language": "python"})
    monkeypatch.setattr(sandbox, "isolation", lambda: tuple(p for p in sandbox.FULL_ISOLATION if p not in ("minimal-root", "netns")))
    assert task.load_docs(DataStore(str(mirror)))
    warning = capsys.readouterr().err
    assert warning.count("\n") == 1 and "without netns, minimal-root" in warning
    monkeypatch.setattr(sandbox, "isolation", lambda: sandbox.FULL_ISOLATION)
    task.load_docs(DataStore(str(mirror)))
    assert capsys.readouterr().err == ""
