"""The isolation relay without Docker: the trusted `CandidateProcess` drives a real candidate process
(`python -m vero.modeb.isolation.candidate_host`, harbor's classes replaced by plain stand-ins since harbor is
not installed here) against `LocalEnvironment`, a stand-in for harbor's docker environment that
runs commands for real in a directory. What this proves: the agent API round trip (exec, uploads,
downloads, logs, context), the request policy, that hostile frames end the phase, and that a
crashing or hanging candidate is reported and killed. Running as another user and the real
harbor are covered by tests/compiler/test_e2e_modeb.py."""

from __future__ import annotations

import asyncio
import json
import struct
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import vero.modeb.isolation.candidate_host  # noqa: F401  (run as a module by the candidate process)
from tests.support.relay import HEADER, Context, LocalEnvironment, drive, report
from vero.core.confine import unconfined
from vero.modeb.isolation import trusted_side
from vero.modeb.isolation.errors import CandidateAgentError, ProtocolError
from vero.modeb.isolation.protocol import (
    MAX_FRAME_BYTES,
    MAX_TRANSFER_BYTES,
    Frame,
    Request,
    encode_frame,
    parse_candidate_message,
    read_frame,
    tail_within,
)
from vero.modeb.isolation.spec import SCRATCH_PREFIX, Isolation

# The start of an agent that writes a streamed upload's frame by hand (`fd`, `head`).
STREAMED_UPLOAD = '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        fd = environment._channel.out_fd
        body = json.dumps({"type": "request", "id": 7, "call": {"op": "upload", "kind": "dir", "target": "/x"}})
        head = struct.pack(">II", len(body), 0xFFFFFFFF) + body.encode()
'''

AGENTS = {
    "honest": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        result = await environment.exec("echo $GREETING; pwd", env={"GREETING": instruction}, cwd="/work")
        payload = Path(os.environ["HOME"]) / "payload"
        (payload / "sub").mkdir(parents=True)
        (payload / "a.txt").write_text("A")
        (payload / "sub" / "b.txt").write_text("B")
        await environment.upload_dir(payload, "/work/payload")
        await environment.upload_file(payload / "a.txt", "/work/single.txt")
        back = Path(os.environ["HOME"]) / "back"
        await environment.download_dir("/work/payload", back)
        await environment.download_file("/work/single.txt", back / "single-copy.txt")
        self.report = {"stdout": result.stdout, "rc": result.return_code,
                       "b": (back / "sub/b.txt").read_text(),
                       "single": (back / "single-copy.txt").read_text(), "kwargs": self.kwargs,
                       "extra_env": self.extra_env, "model": self.model_name, "home": os.environ["HOME"],
                       "secret": os.environ.get("VERO_TEST_SECRET"),
                       "private": os.environ.get("VERO_TEST_PRIVATE"),
                       "user": environment.default_user, "session": environment.session_id}
        self.save()
        context.n_input_tokens = 42
        context.metadata = {"skill": "greet"}
''',
    "users": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        await self.attempt("as_root", environment.exec("id", user="root"))
        await self.attempt("as_default", environment.exec("echo default"))
        await self.attempt("as_agent", environment.exec("echo agent", user="agent"))
        self.save()
''',
    "links": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        home = Path(os.environ["HOME"])
        await self.attempt("file_link", environment.download_file("/secret-link", home / "got"))
        await self.attempt("dir_with_link", environment.download_dir("/shared", home / "shared"))
        self.report["shared"] = sorted(p.name for p in (home / "shared").iterdir())
        self.save()
''',
    "crash_init": '''
class Agent(Base):
    def __init__(self, *args, **kwargs):
        raise ValueError("no model configured")
''',
    "raises": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        self.report = {"before": "raising"}
        self.save()
        raise RuntimeError("boom")
''',
    "exits": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        os._exit(3)
''',
    "hangs": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        (Path(os.environ["HOME"]).parents[1] / "hang.pid").write_text(str(os.getpid()))
        await asyncio.sleep(3600)
''',
    "bad_context": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        context.n_input_tokens = "lots"
''',
    "flood": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        results = await asyncio.gather(*(environment.exec("sleep 3") for _ in range(20)),
                                       return_exceptions=True)
        self.report = {"ok": sum(not isinstance(r, Exception) for r in results),
                       "refused": sorted({str(r) for r in results if isinstance(r, Exception)})}
        self.save()
''',
    "raw_path": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        self.raw(environment, {"type": "request", "id": 7, "call": {"op": "upload", "kind": "file",
                 "target": "/x", "name": "../../etc/cron.d/pwn"}}, b"tar")
        await asyncio.sleep(30)
''',
    "raw_huge": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        os.write(environment._channel.out_fd, struct.pack(">II", 2**31, 0))
        await asyncio.sleep(30)
''',
    "raw_huge_payload": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        os.write(environment._channel.out_fd, struct.pack(">II", 10, 2**31))
        await asyncio.sleep(30)
''',
    "raw_exec_payload": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        self.raw(environment, {"type": "request", "id": 7, "call": {"op": "exec", "command": "true"}}, b"x")
        await asyncio.sleep(30)
''',
    "raw_upload_without_payload": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        self.raw(environment, {"type": "request", "id": 7, "call": {"op": "upload", "kind": "dir",
                 "target": "/x"}})
        await asyncio.sleep(30)
''',
    "wide_output": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        # 24 M NULs on stdout take 144 MB as JSON; 2.7 M characters of text on stderr take 4 MB.
        result = await environment.exec("head -c 24000000 /dev/zero; yes é | head -c 3999999 >&2")
        self.report = {"out": len(result.stdout), "out_chars": sorted(set(result.stdout)),
                       "err": result.stderr[:4], "err_len": len(result.stderr), "rc": result.return_code}
        self.save()
''',
    "raw_type": '''
class Agent(Base):
    async def run(self, instruction, environment, context):
        self.raw(environment, {"type": "reply", "id": 1, "ok": True})
        await asyncio.sleep(30)
''',
    # Streamed payloads: the frame header's payload length 0xFFFFFFFF, then chunks (4-byte length).
    "raw_stream_big_chunk": STREAMED_UPLOAD + '''
        os.write(fd, head + struct.pack(">I", 2**24))
        await asyncio.sleep(30)
''',
    "raw_stream_cut": STREAMED_UPLOAD + '''
        os.write(fd, head + struct.pack(">I", 100) + bytes(10))
        os.close(fd)
        await asyncio.sleep(30)
''',
    "raw_stream_after_end": STREAMED_UPLOAD + '''
        os.write(fd, head + struct.pack(">I", 1024) + bytes(1024) + bytes(4) + struct.pack(">I", 5) + b"extra")
        await asyncio.sleep(30)
''',
    "raw_stream_exec": STREAMED_UPLOAD.replace('"upload", "kind": "dir", "target": "/x"',
                                               '"exec", "command": "true"') + '''
        os.write(fd, head + bytes(4))
        await asyncio.sleep(30)
''',
    "raw_stream_aborted": STREAMED_UPLOAD + '''
        os.write(fd, head + struct.pack(">I", 3) + b"tar" + struct.pack(">I", 0xFFFFFFFF))
        result = await environment.exec("echo still in step")
        self.report = {"after": result.stdout, "uploaded": os.path.exists("/x")}
        self.save()
''',
}


@pytest.fixture()
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SimpleNamespace]:
    worktree = tmp_path / "worktree"
    worktree.mkdir()
    for name, body in AGENTS.items():
        (worktree / f"{name}_agent.py").write_text(HEADER + textwrap.dedent(body))
    monkeypatch.setenv("VERO_TEST_SECRET", "forwarded")
    monkeypatch.setenv("VERO_TEST_PRIVATE", "kept back")
    isolation = Isolation(confinement=unconfined(), scratch_root=tmp_path / "work", forward_env=["VERO_TEST_SECRET"])
    logs = tmp_path / "logs"
    logs.mkdir()
    container = tmp_path / "container"
    container.mkdir()
    yield SimpleNamespace(tmp=tmp_path, worktree=worktree, isolation=isolation, logs=logs,
                          container=container)
    isolation.close()


def test_the_agent_api_round_trips_through_the_pipe(world: SimpleNamespace) -> None:
    environment = LocalEnvironment(world.container)
    context = Context()
    process = asyncio.run(drive(world, "honest", environment, context, model_name="m/x",
                                kwargs={"temperature": 0.5}, extra_env={"K": "v"}))
    seen = report(world)
    assert seen["stdout"].splitlines() == ["hello", str(world.container / "work")] and seen["rc"] == 0
    assert (world.container / "work/payload/sub/b.txt").read_text() == "B"
    assert (world.container / "work/single.txt").read_text() == "A"
    assert seen["b"] == "B" and seen["single"] == "A"
    assert seen["kwargs"] == {"temperature": 0.5} and seen["extra_env"] == {"K": "v"}
    assert seen["model"] == "m/x"
    assert seen["secret"] == "forwarded" and seen["private"] is None
    assert seen["session"] == "trial__env" and seen["user"] is None
    assert Path(seen["home"]).parent.name.startswith(SCRATCH_PREFIX)
    # Logs of both phases came back; the context fields were copied into harbor's object.
    assert (world.logs / "setup.txt").read_text() == "set up"
    assert context.n_input_tokens == 42 and context.metadata == {"skill": "greet"}
    # The process is gone and its scratch dir removed.
    assert process.proc.returncode is not None
    assert not Path(seen["home"]).exists()
    assert [p.name for p in (world.tmp / "work").iterdir()] == [world.isolation.shim.name]


def test_exec_runs_only_as_the_tasks_agent_user(world: SimpleNamespace) -> None:
    environment = LocalEnvironment(world.container, default_user="agent")
    asyncio.run(drive(world, "users", environment))
    seen = report(world)
    assert seen["as_root"] == "RelayError: refused: exec as 'root': this task's agent runs as 'agent'"
    assert seen["as_default"] == "default\n" and seen["as_agent"] == "agent\n"
    assert environment.users == [None, "agent"]


def test_downloads_never_follow_links_to_trusted_files(world: SimpleNamespace) -> None:
    trusted = world.tmp / "trusted-secret"
    trusted.write_text("held-out answer")
    (world.container / "secret-link").symlink_to(trusted)
    (world.container / "shared").mkdir()
    (world.container / "shared" / "ok.txt").write_text("fine")
    (world.container / "shared" / "leak").symlink_to(trusted)
    asyncio.run(drive(world, "links", LocalEnvironment(world.container)))
    seen = report(world)
    assert seen["file_link"].startswith("RelayError: cannot read") and "symbolic links" in seen["file_link"]
    assert seen["dir_with_link"] == "ok" and seen["shared"] == ["ok.txt"]
    leaked = [p for p in world.tmp.rglob("*") if p.is_file() and not p.is_symlink() and p != trusted
              and "held-out answer" in p.read_text(errors="replace")]
    assert leaked == []


@pytest.mark.parametrize(("agent", "message"), [
    ("raw_path", "invalid message at request.call.upload.name: not a plain file name"),
    ("raw_huge", "broke the protocol: frame of 2147483648 bytes"),
    ("raw_huge_payload", "broke the protocol: transfer of 2147483648 bytes is larger than 67108864"),
    ("raw_exec_payload", "broke the protocol: a 'request' message carries no payload"),
    ("raw_upload_without_payload", "broke the protocol: an upload request carries no payload"),
    ("raw_type", "broke the protocol: invalid message at (top level)"),
])
def test_hostile_frames_end_the_phase(world: SimpleNamespace, agent: str, message: str) -> None:
    with pytest.raises(CandidateAgentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        asyncio.run(drive(world, agent, LocalEnvironment(world.container), run_timeout=20))
    assert not (world.tmp / "etc").exists()


@pytest.mark.parametrize(("agent", "message"), [
    ("raw_stream_big_chunk", "broke the protocol: chunk of 16777216 bytes is larger than 1048576"),
    ("raw_stream_cut", "broke the protocol: the stream ended inside a streamed payload"),
    ("raw_stream_after_end", "broke the protocol: transfer of 1702392946 bytes is larger than 67108864"),
    ("raw_stream_exec", "broke the protocol: a 'request' message carries no payload"),
])
def test_hostile_streamed_payloads_end_the_phase(world: SimpleNamespace, agent: str, message: str) -> None:
    with pytest.raises(CandidateAgentError, match=message):
        asyncio.run(drive(world, agent, LocalEnvironment(world.container), run_timeout=20))


def test_an_aborted_upload_fails_alone_and_the_pipe_stays_in_step(world: SimpleNamespace) -> None:
    asyncio.run(drive(world, "raw_stream_aborted", LocalEnvironment(world.container), run_timeout=20))
    assert report(world) == {"after": "still in step\n", "uploaded": False}
    assert not (world.container / "x").exists()


def test_failures_of_the_candidate_are_reported(world: SimpleNamespace) -> None:
    environment = LocalEnvironment(world.container)
    with pytest.raises(CandidateAgentError, match="raised ValueError: no model configured"):
        asyncio.run(drive(world, "crash_init", environment))
    with pytest.raises(CandidateAgentError, match="raised RuntimeError: boom"):
        asyncio.run(drive(world, "raises", environment))
    assert report(world) == {"before": "raising"}  # logs written before the exception still came back
    with pytest.raises(CandidateAgentError, match=r"process ended \(exit code 3\)"):
        asyncio.run(drive(world, "exits", environment))


def test_a_hanging_candidate_is_killed_when_harbor_gives_up(world: SimpleNamespace) -> None:
    with pytest.raises(asyncio.TimeoutError):
        asyncio.run(drive(world, "hangs", LocalEnvironment(world.container), run_timeout=3))
    pid = int((world.tmp / "work" / "hang.pid").read_text())
    assert not Path(f"/proc/{pid}").exists() or "State:\tZ" in Path(f"/proc/{pid}/status").read_text()
    left = sorted(p.name for p in (world.tmp / "work").iterdir())
    assert left == sorted(["hang.pid", world.isolation.shim.name])


def test_an_invalid_context_is_ignored(world: SimpleNamespace) -> None:
    context = Context()
    asyncio.run(drive(world, "bad_context", LocalEnvironment(world.container), context))
    assert context.n_input_tokens is None


def test_requests_in_flight_are_bounded(world: SimpleNamespace) -> None:
    asyncio.run(drive(world, "flood", LocalEnvironment(world.container)))
    seen = report(world)
    assert seen == {"ok": 8, "refused": ["more than 8 requests in flight"]}


def test_exec_output_too_wide_for_a_frame_comes_back_as_its_tail(world: SimpleNamespace) -> None:
    asyncio.run(drive(world, "wide_output", LocalEnvironment(world.container), run_timeout=60))
    seen = report(world)
    most = MAX_TRANSFER_BYTES // 2 // 6   # NULs that fit in half the transfer limit as JSON
    assert 0.9 * most < seen["out"] <= most and seen["out_chars"] == ["\0"] and seen["rc"] == 0
    assert seen["err"] == "é\né\n" and seen["err_len"] == 2_666_666   # small enough: whole


# --- the protocol itself ------------------------------------------------------------------------


def exec_frame(**call: Any) -> Frame:
    body = {"type": "request", "id": 1, "call": {"op": "exec", "command": "true", **call}}
    return Frame(json.dumps(body).encode())


@pytest.mark.parametrize(("call", "error"), [
    ({"command": "a\0b"}, "NUL"),
    ({"cwd": "relative"}, "absolute"),
    ({"env": {"A=B": "x"}}, "invalid environment variable name"),
    ({"env": {"A": "x\0"}}, "NUL"),
    ({"user": "root; rm -rf /"}, "invalid user"),
    ({"user": -1}, "uid out of range"),
    ({"timeout_sec": 0}, "greater than or equal to 1"),
    ({"timeout_sec": "5"}, "valid integer"),
    ({"shell": True}, "Extra inputs are not permitted"),
])
def test_requests_are_validated_strictly(call: dict[str, Any], error: str) -> None:
    with pytest.raises(ProtocolError, match=error):
        parse_candidate_message(exec_frame(**call))


@pytest.mark.parametrize("text", ["a" * 100, "\0" * 5000, "é" * 5000, "\U0001f600\n" * 5000,
                                  "x\0" * 5000, '"\\' * 5000, "\ud800" * 5000])
def test_a_tail_within_a_byte_limit_fits_and_is_a_suffix(text: str) -> None:
    cut = tail_within(text, 4000)
    assert text.endswith(cut)
    encoded = len(json.dumps(cut, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    assert encoded <= 4000 and (cut == text or encoded > 3000)


def test_frames_round_trip_and_refuse_truncation_and_oversize() -> None:
    message = parse_candidate_message(exec_frame(cwd="/app", env={"A": "1"}, user="agent", timeout_sec=5))
    assert isinstance(message, Request)

    async def read(data: bytes) -> list[Frame | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        frames: list[Frame | None] = []
        while True:
            frame = await read_frame(reader)
            frames.append(frame)
            if frame is None:
                return frames

    frame = encode_frame(message)
    body = message.model_dump_json(exclude_none=True).encode()
    upload = Request.model_validate({"type": "request", "id": 2,
                                     "call": {"op": "upload", "kind": "dir", "target": "/x"}})
    binary = bytes(range(256)) * 3   # raw bytes, not base64 in the JSON
    with_payload = encode_frame(upload, binary)
    assert asyncio.run(read(frame + with_payload + frame)) == [
        Frame(body), Frame(upload.model_dump_json(exclude_none=True).encode(), binary), Frame(body), None]
    assert with_payload.endswith(binary)
    with pytest.raises(ProtocolError, match="inside a frame"):
        asyncio.run(read(frame[:-1]))
    with pytest.raises(ProtocolError, match="inside a frame"):
        asyncio.run(read(with_payload[:-1]))
    with pytest.raises(ProtocolError, match="header"):
        asyncio.run(read(b"\0\0\0\0\0"))
    with pytest.raises(ProtocolError, match="larger than"):
        asyncio.run(read(struct.pack(">II", MAX_FRAME_BYTES + 1, 0)))
    with pytest.raises(ProtocolError, match="transfer larger than"):
        encode_frame(upload, bytes(MAX_TRANSFER_BYTES + 1))


def test_a_streamed_upload_the_trusted_side_cannot_stage_fails_without_a_hang(
        world: SimpleNamespace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: no private dir for the upload. Its chunks must still leave the pipe, or
    the next frame is never read."""
    mkdtemp = tempfile.mkdtemp

    def no_space_for_the_relay(suffix: str | None = None, prefix: str | None = None,
                               dir: str | None = None) -> str:
        if prefix == trusted_side.PRIVATE_PREFIX:
            raise OSError(28, "No space left on device")
        return mkdtemp(suffix, prefix, dir)

    monkeypatch.setattr(tempfile, "mkdtemp", no_space_for_the_relay)
    with pytest.raises(CandidateAgentError, match="RelayError: the upload failed in the task environment"):
        asyncio.run(drive(world, "honest", LocalEnvironment(world.container), run_timeout=20))
