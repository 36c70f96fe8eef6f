"""Every command block in README.md and docs/*.md runs, as a user would type it after
`make demo` (in the spirit of sqlite-utils' cog/doc tests), so the docs cannot go stale.

- A block fenced ```sh or ```console is run; in a console block the `$ ` lines are commands and
  the lines under each are its expected output. A block whose previous line is
  `<!-- not-run: <reason> -->` is skipped with that reason (`pytest -rs` lists them), and so is
  README's set-up block (`make demo` / `make test`: this test runs after the first and inside
  the second).
- Commands run with bash in a scratch directory that looks like the clone (its top-level
  entries are links to the repository), one shell per command; exported variables and the
  working directory carry over to the next command, and through the file. Port 8000 becomes a
  free port (the machine is shared).
- Long-running commands (`qaloop serve`, `up`, the services) are started in the background,
  probed (`/healthz` for the HTTP ones, alive after a few seconds for the others) and stopped
  at the end of the file, or when the next HTTP server starts.
- Blocks that need Kafka or PostgreSQL form the integration tier: skipped unless the servers
  are up (`scripts/infra up` + `eval "$(scripts/infra env)"`), and then run on a private topic
  prefix and PostgreSQL schema. `scripts/infra` in the scratch directory hands out that schema
  and never stops the shared servers.
- Expected output is compared loosely: every expected line must match an output line, in
  order; `…` matches anything, and a number followed by ` ms` or ` s` (a timing) matches any
  number. Counts and ids are compared exactly.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```\s*(\w*)\s*$")
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(.+?)\s*-->\s*$")
SETUP = ["make demo", "make test"]
NEEDS_SERVERS = re.compile(
    r"QALOOP_PG_DSN|QALOOP_KAFKA|--bus kafka|scripts/infra|postgresql://|"
    r"\bqaloop (up|gateway|worker|judge|store|retrier|flink-job)\b"
)
LONG_RUNNING = re.compile(r"^qaloop (serve|up|gateway|worker|judge|store|retrier|flink-job)\b")
CHAINED = re.compile(r"\|\||&&|;|\s\|\s|--help")  # `qaloop serve --port 99999 || echo` ends
HTTP_SERVERS = ("serve", "up", "gateway")
COMMAND_TIMEOUT_S = 300
TOOLS = ("curl",)  # not Python: a machine without it skips the block, saying so


@dataclass(frozen=True)
class Command:
    text: str
    expected: tuple[str, ...] = ()


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    commands: tuple[Command, ...]
    skip: str | None

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def needs_servers(self) -> bool:
        return any(NEEDS_SERVERS.search(c.text) for c in self.commands)


def _join_continuations(lines: list[str]) -> list[str]:
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1].rstrip() + " " + line.strip()
        else:
            joined.append(line)
    return joined


def parse(path: Path) -> list[Block]:
    blocks: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    previous = ""
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        lang, start = match.group(1), i + 1
        j = start
        while j < len(lines) and not lines[j].startswith("```"):
            j += 1
        body = lines[start:j]
        i = j + 1
        if lang in ("sh", "console"):
            not_run = NOT_RUN.match(previous)
            commands = _console(body) if lang == "console" else _sh(body)
            skip = not_run.group(1) if not_run else None
            if [c.text for c in commands] == SETUP:
                skip = "the set-up itself: this test runs after `make demo`, inside `make test`"
            blocks.append(Block(path, start, lang, tuple(commands), skip))
        previous = ""
    return blocks


def _sh(body: list[str]) -> list[Command]:
    return [
        Command(line.strip())
        for line in _join_continuations(body)
        if line.strip() and not line.strip().startswith("#")
    ]


def _console(body: list[str]) -> list[Command]:
    commands: list[Command] = []
    text: str | None = None
    expected: list[str] = []
    for line in _join_continuations(body):
        if line.startswith("$ "):
            if text is not None:
                commands.append(Command(text, tuple(expected)))
            text, expected = line[2:].strip(), []
        elif text is not None:
            expected.append(line)
    if text is not None:
        commands.append(Command(text, tuple(expected)))
    return commands


ALL_BLOCKS = [block for path in DOCS for block in parse(path)]


# --------------------------------------------------------------------------- loose matching

_TOKEN = re.compile(r"…|\d+(?:\.\d+)?(?= (?:ms|s)\b)|\s+")


def line_pattern(expected: str) -> re.Pattern[str]:
    parts: list[str] = []
    pos = 0
    text = expected.strip()
    for m in _TOKEN.finditer(text):
        parts.append(re.escape(text[pos : m.start()]))
        token = m.group()
        parts.append(".*?" if token == "…" else r"\s+" if token.isspace() else r"[\d.]+")
        pos = m.end()
    parts.append(re.escape(text[pos:]))
    return re.compile("".join(parts))


def output_matches(expected: tuple[str, ...], actual: str) -> str | None:
    """None when every expected line matches an actual line, in order; else what is missing."""
    lines = [line.strip() for line in actual.splitlines()]
    at = 0
    for want in expected:
        if want.strip() in ("", "…"):  # a line of its own: any lines, or none
            continue
        pattern = line_pattern(want)
        while at < len(lines) and not pattern.fullmatch(lines[at]):
            at += 1
        if at == len(lines):
            return f"no output line matches {want!r}"
        at += 1
    return None


# --------------------------------------------------------------------------- a shell session


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


INFRA_WRAPPER = """#!/bin/bash
# The docs test's scripts/infra: the real one for up/status, a private schema and topic prefix
# in `env`, and never a stop (the servers are shared by every test on this machine).
case "$1" in
  up) "{real}" "$@" >/dev/null || exit $?; printf '%s\\n' {exports};;
  env) printf '%s\\n' {exports};;
  status) exec "{real}" status;;
  *) echo "docs test: 'scripts/infra $*' not run (shared servers)" >&2;;
esac
"""


@dataclass
class Session:
    """One documentation file's terminal: a scratch clone, its exported state, and the
    long-running processes it started."""

    cwd: Path
    env: dict[str, str]
    port: int
    state: Path
    background: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)

    @classmethod
    def create(cls, scratch: Path, extra_env: dict[str, str]) -> Session:
        scratch.mkdir(parents=True, exist_ok=True)
        for entry in ROOT.iterdir():
            if entry.name in (".git", "scripts") or entry.name.startswith((".venv", "qaloop.db")):
                continue
            (scratch / entry.name).symlink_to(entry)
        (scratch / "scripts").mkdir()
        for script in (ROOT / "scripts").iterdir():
            if script.name != "infra":
                (scratch / "scripts" / script.name).symlink_to(script)
        env = {k: v for k, v in os.environ.items() if not k.startswith("QALOOP_")}
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        port = free_port()
        env["QALOOP_PORT"] = str(port)
        env.update(extra_env)
        exports = " ".join(
            shlex.quote(f"export {k}={shlex.quote(v)}")
            for k, v in extra_env.items()
            if k.startswith("QALOOP_")
        )
        infra = scratch / "scripts" / "infra"
        infra.write_text(INFRA_WRAPPER.format(real=ROOT / "scripts" / "infra", exports=exports))
        infra.chmod(0o755)
        state = scratch / ".docs-session"
        state.write_text(f"cd {shlex.quote(str(scratch))}\n")
        return cls(scratch, env, port, state)

    def _script(self, command: str) -> str:
        return (
            f"source {shlex.quote(str(self.state))}\n{command}\nrc=$?\n"
            f'{{ export -p; echo "cd $(printf %q "$PWD")"; }} > {shlex.quote(str(self.state))}\n'
            "exit $rc\n"
        )

    def rewrite(self, command: str) -> str:
        return re.sub(r"\b8000\b", str(self.port), command)

    def run(self, command: Command) -> None:
        text = self.rewrite(command.text)
        for tool in TOOLS:
            if re.match(rf"{tool}\b", text) and shutil.which(tool) is None:
                pytest.skip(f"`{tool}` is not installed here")
        if LONG_RUNNING.match(text) and not CHAINED.search(text):
            self.start(text)
            return
        try:
            done = subprocess.run(
                ["bash", "-c", self._script(text)],
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,  # as a terminal shows them: interleaved
                text=True,
                timeout=COMMAND_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"`{command.text}` ran over {COMMAND_TIMEOUT_S} s")
        context = f"`{command.text}`\n--- output\n{done.stdout[-4000:]}"
        assert done.returncode == 0, f"exit {done.returncode}: {context}"
        problem = output_matches(command.expected, done.stdout)
        if problem is not None:
            pytest.fail(f"{problem}: {context}")

    def start(self, text: str) -> None:
        service = text.split()[1]
        if service in HTTP_SERVERS:  # one HTTP server on the port at a time
            for name, proc, _ in list(self.background):
                if name in HTTP_SERVERS:
                    self._stop(proc)
        log = self.cwd / f".bg-{len(self.background)}-{service}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", f"source {shlex.quote(str(self.state))}\nexec {text}"],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stopped with its children
            )
        self.background.append((service, proc, log))
        deadline = time.monotonic() + (90 if service in HTTP_SERVERS else 4)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"`{text}` exited {proc.returncode}:\n{log.read_text()[-3000:]}")
            if service in HTTP_SERVERS:
                try:
                    if httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).is_success:
                        return
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        if service in HTTP_SERVERS:
            pytest.fail(f"`{text}` never answered /healthz:\n{log.read_text()[-3000:]}")

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        for _, proc, _ in reversed(self.background):
            self._stop(proc)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Session]]:
    """One session per documentation file (and tier), shared by its blocks in order."""
    opened: dict[str, Session] = {}
    yield opened
    for session in opened.values():
        session.close()


def _session(
    sessions: dict[str, Session], key: str, tmp: pytest.TempPathFactory, env: dict[str, str]
) -> Session:
    if key not in sessions:
        sessions[key] = Session.create(tmp.mktemp("docs") / "clone", env)
    return sessions[key]


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """A private PostgreSQL schema and topic prefix on the shared servers (or a skip)."""
    bootstrap, dsn = os.environ.get("QALOOP_KAFKA_BOOTSTRAP"), os.environ.get("QALOOP_PG_DSN")
    if not bootstrap or not dsn:
        pytest.skip(
            'needs Kafka and PostgreSQL: run `scripts/infra up && eval "$(scripts/infra env)"`'
        )
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra is not installed")
    pytest.importorskip("confluent_kafka", reason="the kafka extra is not installed")
    schema = f"qaloop_docs_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in dsn else "?"
    try:
        yield {
            "QALOOP_KAFKA_BOOTSTRAP": bootstrap,
            "QALOOP_PG_DSN": f"{dsn}{sep}options=-csearch_path%3D{schema}",
            "QALOOP_TOPIC_PREFIX": f"docs{uuid.uuid4().hex[:10]}",
        }
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


LOCAL = [b for b in ALL_BLOCKS if not b.needs_servers]
WITH_SERVERS = [b for b in ALL_BLOCKS if b.needs_servers]


@pytest.mark.parametrize("block", LOCAL, ids=[b.name for b in LOCAL])
def test_block_runs(
    block: Block, sessions: dict[str, Session], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if block.skip:
        pytest.skip(f"not-run: {block.skip}")
    session = _session(sessions, f"local:{block.path}", tmp_path_factory, {})
    for command in block.commands:
        session.run(command)


@pytest.mark.integration
@pytest.mark.parametrize("block", WITH_SERVERS, ids=[b.name for b in WITH_SERVERS])
def test_block_with_servers_runs(
    block: Block,
    sessions: dict[str, Session],
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> None:
    if block.skip:
        pytest.skip(f"not-run: {block.skip}")
    env = request.getfixturevalue("servers")
    session = _session(sessions, f"servers:{block.path}", tmp_path_factory, env)
    for command in block.commands:
        session.run(command)


# --------------------------------------------------------------------------- the checker itself


def test_parser_reads_fences_markers_and_console_output(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text(
        "text\n\n```console\n$ echo a \\\n  b\na b\n$ true\n```\n\n"
        "<!-- not-run: needs a GPU -->\n```sh\nnvidia-smi   # comment\n# only a comment\n```\n"
        "```python\nprint(1)\n```\n",
        encoding="utf-8",
    )
    console, sh = parse(doc)
    assert console.commands == (Command("echo a b", ("a b",)), Command("true"))
    assert console.skip is None
    assert sh.skip == "needs a GPU" and [c.text for c in sh.commands] == ["nvidia-smi   # comment"]


def test_loose_matching() -> None:
    assert (
        output_matches(("wall time  2.26 s", "LLM calls 160"), "x\nwall time 9.1 s\nLLM calls 160")
        is None
    )
    assert output_matches(("LLM calls 160",), "LLM calls 161") is not None
    assert output_matches(('{"id":"ab","answer":"…"}',), '{"id":"ab","answer":"long text"}') is None
    assert output_matches(("b", "a"), "a\nb") is not None  # order matters
    assert output_matches(("…", "b…"), "b, then more") is None  # a "…" line: any lines or none
    assert output_matches(("p50 0.01 ms, p95 0.42 ms",), "p50 3.5 ms, p95 10 ms") is None


def test_readme_starts_with_the_two_setup_commands() -> None:
    head = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[:6]
    assert head == ["# qaloop", "", "```sh", "make demo", "make test", "```"]


def test_every_not_run_block_says_why() -> None:
    for block in ALL_BLOCKS:
        if block.skip is not None:
            assert len(block.skip) > 10, f"{block.name}: say why it is not run"
