"""Fuzzing the sidecar's HTTP API against a real server process (hypothesis).

Properties, for every generated request: never a 500; a refusal is a 4xx whose body is JSON
`{"error": "<message>"}`; and a refused request changes nothing on the admin volume (ledger,
experiment records, submission) nor in what /status reports. One server serves every example
of a module (a start costs about a second); examples are few enough to keep each property
well under a minute.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.mode_a import IMPROVED_AGENT, ModeABench, commit_agent, make_mode_a_bench, shared_tmp
from tests.support.sidecar import Sidecar, serve_config, start_sidecar

FUZZ = settings(max_examples=100, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
SPLIT_SIZES = {"train": 6, "validation": 8, "test": 6}
EVALUABLE = {"train", "validation"}
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Sidecar, ModeABench]]:
    with shared_tmp() as root:
        bench = make_mode_a_bench(tmp_path_factory.mktemp("fuzz") / "bench", SPLIT_SIZES, agent_parent=root)
        commit_agent(bench.agent_repo, IMPROVED_AGENT)  # HEAD is not the (free) baseline
        sidecar = start_sidecar(root, serve_config(root, bench))
        try:
            yield sidecar, bench
        finally:
            sidecar.stop()
    # The whole module must not have spent anything: every request was a refusal.


@pytest.fixture(scope="module")
def client(served: tuple[Sidecar, ModeABench]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0].url, timeout=60) as session:
        yield session


def _snapshot(sidecar: Sidecar, client: httpx.Client) -> tuple[Any, ...]:
    """Everything a request could change: the admin files and the optimizer's view of them (the
    incident log only grows: a refused ref may leave what git said there)."""
    admin, results = sidecar.admin_dir, sidecar.results_dir
    files = tuple(sorted((str(p), p.read_bytes()) for p in [*admin.rglob("*"), *results.rglob("*")]
                         if p.is_file() and admin / "repo" not in p.parents and p.name != "incidents.jsonl"))
    return files, client.get("/status").json()


CLIENT_ERRORS = range(400, 500)


def _assert_refused(response: httpx.Response, statuses: range | set[int] = CLIENT_ERRORS) -> str:
    assert response.status_code in statuses, (response.status_code, response.text[:500])
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    assert "Traceback" not in response.text
    return str(body["error"])


def _encode(value: Any, ascii_only: bool) -> bytes:
    # Python's json writes NaN/Infinity and lone surrogates on request: hostile bodies on purpose.
    return json.dumps(value, allow_nan=True, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


# -- strategies ---------------------------------------------------------------------------------

huge_ints = st.one_of(st.integers(), st.integers(min_value=10**18, max_value=10**60),
                      st.integers(max_value=-(10**18), min_value=-(10**60)))
floats = st.floats(allow_nan=True, allow_infinity=True)
# Any code point, with lone surrogates, NUL, quotes and newlines made common.
texts = st.text(st.one_of(st.characters(exclude_categories=()), st.characters(min_codepoint=0xD800,
                                                                               max_codepoint=0xDFFF),
                          st.sampled_from("\x00\n\r\"\\'")), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | huge_ints | floats | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12)

# Valid JSON only: the duplicate key must be the one thing wrong with a body.
standard_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6)

HOSTILE_REFS = [
    "--upload-pack=touch {marker}", "--upload-pack", "-c", "-ccore.hooksPath=/tmp", "--", "-", "..",
    "main..HEAD", "@{-1}", "HEAD@{0}", "main@{upstream}", "@", "main\n", "main\r\n", "\nmain", "main\x00",
    "ma\x00in", "a" * 300, "refs/heads/../../x", "refs/heads/../../../etc/passwd", "/etc/passwd", "main/",
    "main.", "main.lock", "refs/heads/.hidden", "a//b", "main~1", "main^", "main^{tree}", "HEAD:agent.py",
    "+main:refs/heads/x", "main:refs/heads/x", "*", "main?", "[main]", "ma in", "main\\x", "$(id)", "`id`",
    "main;id", "main|id", "\u2028", "\ud800", "é", "\uff2d\uff21\uff29\uff2e", "0" * 39, "g" * 40, "0" * 41,
]
HOSTILE_PIECES = ["..", "@{", "\n", "\x00", "~", "^", ":", " ", "//", ".lock", "\\", "?", "*", "["]
# Joined around a hostile piece, the result must still never name a commit of the agent repo.
hostile_refs = st.one_of(
    st.sampled_from(HOSTILE_REFS),
    st.builds(lambda head, piece, tail: head + piece + tail,
              st.sampled_from(["", "main", "refs/heads/", "HEAD", "a"]), st.sampled_from(HOSTILE_PIECES),
              st.sampled_from(["", "main", "x", "/y", "-c"])),
    st.builds(lambda body: "-" + body, texts),
)


def _bad_field(draw: st.DrawFn) -> tuple[str, Any]:
    """One field that is certainly wrong, whatever the rest of the body says."""
    which = draw(st.sampled_from(["split", "num_samples", "sample_ids", "commit", "dataset_id", "unknown"]))
    if which == "split":
        not_a_split = json_values.filter(lambda v: not (isinstance(v, str) and v in SPLIT_SIZES))
        return which, draw(st.one_of(not_a_split, st.just("test"), st.just("x" * 300)))
    if which == "num_samples":
        out_of_range = huge_ints.filter(lambda n: not 1 <= n <= 8)
        return which, draw(st.one_of(out_of_range, floats, texts, st.booleans(),
                                     st.lists(st.integers(), max_size=2)))
    if which == "sample_ids":
        unknown_ids = st.lists(texts.filter(lambda t: "-" not in t), min_size=1, max_size=3)
        not_strings = st.lists(st.integers(), min_size=1, max_size=3)
        return which, draw(st.one_of(st.just([]), unknown_ids, not_strings, st.just(["train-0"] * 2), texts,
                                     huge_ints))
    if which == "commit":
        return which, draw(st.one_of(hostile_refs, huge_ints, st.lists(texts, max_size=2), st.booleans()))
    if which == "dataset_id":
        return which, draw(st.one_of(texts, st.just("0" * 64), huge_ints))
    return draw(texts.filter(lambda k: k not in {"split", "num_samples", "sample_ids", "commit",
                                                 "dataset_id"})), draw(json_values)


@st.composite
def bad_eval_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"split": draw(st.sampled_from(sorted(EVALUABLE)))}
    if draw(st.booleans()):
        body["num_samples"] = draw(st.integers(min_value=1, max_value=5))
    key, value = _bad_field(draw)
    body[key] = value
    return body


# -- properties -----------------------------------------------------------------------------------

@FUZZ
@given(raw=st.one_of(st.binary(max_size=300),
                     st.builds(lambda text, cut: text[:cut],
                               st.sampled_from([b'{"split": "train", "num_samples": 1}',
                                                b'{"split": "validation", "sample_ids": ["validation-0"]}']),
                               st.integers(min_value=0, max_value=30)),
                     st.sampled_from([b"[" * 100_000, b'{"a":' * 50_000, b"1" * 5000, b"\xef\xbb\xbf{}",
                                      b'{"split": NaN}', b'{"split": Infinity}', b"{'split': 'train'}"])))
def test_malformed_json_is_422_and_costs_nothing(served: tuple[Sidecar, ModeABench], client: httpx.Client,
                                                 raw: bytes) -> None:
    sidecar, _ = served
    before = _snapshot(sidecar, client)
    _assert_refused(client.post("/eval", content=raw, headers=JSON), {422})
    assert _snapshot(sidecar, client) == before


@FUZZ
@given(body=st.one_of(bad_eval_bodies(), json_values.filter(lambda v: not isinstance(v, dict)
                                                                      or "split" not in v)),
       ascii_only=st.booleans())
def test_wrong_types_and_values_are_refused_and_cost_nothing(served: tuple[Sidecar, ModeABench],
                                                             client: httpx.Client, body: Any,
                                                             ascii_only: bool) -> None:
    sidecar, _ = served
    before = _snapshot(sidecar, client)
    response = client.post("/eval", content=_encode(body, ascii_only), headers=JSON)
    message = _assert_refused(response, {400, 403, 422})
    if ascii_only and _has_non_finite(body):
        assert "is not a JSON value" in message  # NaN/Infinity: refused by the parser, not coerced
    assert _snapshot(sidecar, client) == before


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(v) for v in value)
    return False


@FUZZ
@given(ref=hostile_refs, endpoint=st.sampled_from(["/eval", "/submit"]))
def test_hostile_refs_are_refused_before_git_runs_them(served: tuple[Sidecar, ModeABench],
                                                       client: httpx.Client, ref: str, endpoint: str) -> None:
    sidecar, _ = served
    marker = sidecar.admin_dir.parent / "pwned"
    ref = ref.replace("{marker}", str(marker))
    body = {"split": "train", "commit": ref} if endpoint == "/eval" else {"commit": ref}
    before = _snapshot(sidecar, client)
    response = client.post(endpoint, content=_encode(body, True), headers=JSON)
    message = _assert_refused(response, {422})
    # Refused as a ref, as a ref the agent repo lacks, or (lone surrogates) as no string at all.
    assert "invalid commit" in message or "cannot read" in message or message.startswith("commit: "), message
    assert not marker.exists()
    assert _snapshot(sidecar, client) == before


@FUZZ
@given(data=st.data())
def test_duplicate_keys_are_422(served: tuple[Sidecar, ModeABench], client: httpx.Client,
                                data: st.DataObject) -> None:
    sidecar, _ = served
    key = data.draw(st.sampled_from(["split", "commit", "num_samples", "sample_ids"]))
    if key == "split":
        # Whichever copy a lenient parser kept, it would evaluate "train" or refuse "test".
        first, second = data.draw(st.permutations([json.dumps("test"), json.dumps("train")]))
        raw = f'{{"split": {first}, "split": {second}}}'
    else:
        first, second = json.dumps(data.draw(standard_json)), json.dumps(data.draw(standard_json))
        raw = f'{{"split": "train", "{key}": {first}, "{key}": {second}}}'
    before = _snapshot(sidecar, client)
    message = _assert_refused(client.post("/eval", content=raw.encode(), headers=JSON), {422})
    assert f"duplicate key '{key}'" in message
    assert _snapshot(sidecar, client) == before


JSON_TYPES = ["application/json", "application/json; charset=utf-8", "APPLICATION/JSON",
              "application/problem+json", "application/vnd.vero+json; v=1"]
OTHER_TYPES = ["text/plain", "text/json", "application/x-www-form-urlencoded",
               "multipart/form-data; boundary=x", "application/jsonx", "application/xml", "json",
               "application/", "*/*", "", "application/json+x"]


@FUZZ
@given(content_type=st.one_of(st.sampled_from(JSON_TYPES + OTHER_TYPES),
                              st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30).map(
                                  lambda text: text.strip(" \t"))))  # as a header can carry it
def test_content_types(served: tuple[Sidecar, ModeABench], client: httpx.Client, content_type: str) -> None:
    sidecar, _ = served
    before = _snapshot(sidecar, client)
    response = client.post("/eval", content=b'{"split": "nope"}', headers={"content-type": content_type})
    if content_type in JSON_TYPES:
        assert "unknown split" in _assert_refused(response, {400})
    elif content_type in OTHER_TYPES:
        assert "content type" in _assert_refused(response, {415})
    else:
        _assert_refused(response, {400, 415})
    assert _snapshot(sidecar, client) == before


PATHS = ["/health", "/status", "/eval", "/submit", "/finalize", "/experiments", "/", "/nope", "/eval/",
         "//eval", "/EVAL", "/%2e%2e/%2e%2e/etc/passwd", "/eval?split=train", "/docs", "/openapi.json"]


@FUZZ
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"]),
       path=st.one_of(st.sampled_from(PATHS),
                      st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20).map(
                          lambda t: "/" + t.replace("#", "").replace("?", ""))))
def test_methods_and_paths(served: tuple[Sidecar, ModeABench], client: httpx.Client, method: str,
                           path: str) -> None:
    sidecar, _ = served
    before = _snapshot(sidecar, client)
    response = client.request(method, path)
    assert response.status_code < 500, (method, path, response.status_code, response.text[:300])
    if response.status_code >= 400 and method != "HEAD":
        _assert_refused(response)
    assert _snapshot(sidecar, client) == before


def _accepted(header: bytes, token: str) -> bool:
    """What the server must accept: exactly `Bearer <token>`, surrounding blanks aside."""
    text = header.decode("latin-1")
    return text.startswith("Bearer ") and text[len("Bearer "):].strip() == token


def _forgeries(token: str) -> st.SearchStrategy[bytes]:
    header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                          max_size=80)
    one_char_changed = st.builds(lambda i, c: token[:i] + c + token[i + 1:], st.integers(0, len(token) - 1),
                                 st.sampled_from("Aa0_-"))
    near_misses = st.sampled_from([token[:-1], token + "x", token.upper(), token[1:], "", " " + token[:20]])
    mutations = st.one_of(near_misses, one_char_changed, header_text)
    prefixes = st.sampled_from(["Bearer ", "bearer ", "Bearer", "Basic ", "Token ", "", "Bearer  ",
                                "BEARER "])
    # A header value cannot start or end with blanks on the wire (h11 refuses to send one).
    return st.builds(lambda prefix, body: (prefix + body).strip(" \t").encode("latin-1"), prefixes, mutations)


@FUZZ
@given(data=st.data())
def test_admin_endpoints_refuse_forged_tokens(served: tuple[Sidecar, ModeABench], client: httpx.Client,
                                              data: st.DataObject) -> None:
    sidecar, _ = served
    token = sidecar.token()
    header = data.draw(_forgeries(token))
    if _accepted(header, token):
        assert client.get("/experiments", headers={b"authorization": header}).status_code == 200
        return
    before = _snapshot(sidecar, client)
    for method, path in (("GET", "/experiments"), ("POST", "/finalize")):
        response = client.request(method, path, headers={b"authorization": header})
        assert "admin token" in _assert_refused(response, {403})
    missing = client.post("/finalize")
    assert "admin token" in _assert_refused(missing, {403})
    assert not (sidecar.admin_dir / "finalize.json").exists()
    assert _snapshot(sidecar, client) == before


def test_oversized_bodies_are_413_even_when_chunked(served: tuple[Sidecar, ModeABench],
                                                    client: httpx.Client) -> None:
    sidecar, _ = served
    before = _snapshot(sidecar, client)
    rss_before = _rss_kib(sidecar)

    def chunks() -> Iterator[bytes]:
        yield b'{"split": "'
        for _ in range(64):  # 64 MiB without a Content-Length header
            yield b"a" * (1 << 20)
        yield b'"}'

    for path in ("/eval", "/submit"):
        response = client.post(path, content=chunks(), headers=JSON)
        assert "larger than" in _assert_refused(response, {413})
    declared = client.post("/eval", content=b"x" * (5 * 1024 * 1024), headers=JSON)
    assert "larger than" in _assert_refused(declared, {413})
    # The body was refused while streaming, not buffered whole (64 MiB would show).
    assert _rss_kib(sidecar) - rss_before < 32 * 1024
    assert _snapshot(sidecar, client) == before


def test_nothing_was_spent_by_the_whole_module(served: tuple[Sidecar, ModeABench], client: httpx.Client,
                                               ) -> None:
    sidecar, _ = served
    status = client.get("/status").json()
    assert status["submission"] is None
    assert all(s["budget"] is None or (s["budget"]["runs_used"], s["budget"]["samples_used"]) == (0, 0)
               for s in status["splits"])
    assert not (sidecar.admin_dir / "experiments").exists() or not any(
        (sidecar.admin_dir / "experiments").iterdir())
    assert "Traceback" not in sidecar.log_text()


def _rss_kib(sidecar: Sidecar) -> int:
    status = Path(f"/proc/{sidecar.proc.pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0])
