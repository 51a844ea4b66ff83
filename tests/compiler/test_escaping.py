"""Every escaping filter round-trips any text through the real parser of its format."""

from __future__ import annotations

import subprocess

import pytest
import tomllib
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt  # pants: no-infer-dep (markdown-it-py comes with rich)

from vero.compiler import escaping
from vero.compiler.render import UnescapedValueError, environment, render
from vero.errors import VeroError

HOSTILE = [
    'a "quoted" value', "it's", "line one\nline two", "$(touch /tmp/pwn)", "`touch /tmp/pwn`",
    "{{ 7*7 }}", "{% raw %}", "${HOME}", "$$", "]]", "# not a comment", "\\", "\\n", "tab\there",
    "ünïcödé ✓ 🚀", "--flag", "-", "", " leading and trailing ", "a\r\nb", "x\n\n\ny\n", "<b>&amp;</b>",
    "* item", "1. item", "| a | b |", "[link](http://x)", "\u2028sep", "\x7f\x1b[31m",
]
# Any text a YAML file can carry (no NUL, no lone surrogates: the loader refuses those).
TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
# Markdown renderers replace most C0/C1 control characters: compare the printable ones.
PRINTABLE = st.text(alphabet=st.characters(exclude_categories=["Cs", "Cc"], include_characters="\n\t\r"))


def _toml(value: str) -> str:
    return str(tomllib.loads(f"v = {escaping.toml(value)}\n")["v"])


def _yaml(value: str) -> str:
    return str(yaml.safe_load(f"v: {escaping.yaml(value)}\n")["v"])


def _md_text(markdown: str) -> str:
    """The text a CommonMark parser reads from one paragraph (hard breaks as newlines)."""
    tokens = MarkdownIt("commonmark").parse(markdown)
    inline = [t for t in tokens if t.type == "inline"]
    assert len(inline) == 1, [t.type for t in tokens]
    out = []
    for child in inline[0].children or []:
        if child.type == "text":
            out.append(child.content)
        elif child.type == "hardbreak":
            out.append("\n")
        else:
            raise AssertionError(f"markup {child.type} from {markdown!r}")
    return "".join(out)


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_round_trip(value: str) -> None:
    assert _toml(value) == value
    assert _yaml(value) == value
    compose = yaml.safe_load(f"v: {escaping.compose(value)}\n")["v"]
    assert compose.replace("$$", "$") == value
    out = subprocess.run(["bash", "-c", f"printf %s {escaping.sh(value)}"], capture_output=True, check=True)
    assert out.stdout.decode() == value
    if value.strip("\x7f\x1b") == value:
        assert _md_text("x " + escaping.md(value) + " y") == f"x {value} y"


@settings(max_examples=300, deadline=None)
@given(TEXT)
def test_toml_and_yaml_round_trip_any_text(value: str) -> None:
    assert _toml(value) == value
    assert _yaml(value) == value
    assert escaping.yaml(value).isascii()


@settings(max_examples=40, deadline=None)
@given(TEXT)
def test_shell_words_are_never_expanded(value: str) -> None:
    words = [value, "second word", value]
    script = f"printf '%s\\0' {escaping.sh_words(words)}"
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True)
    assert out.stdout.decode().split("\0")[:-1] == words


@settings(max_examples=300, deadline=None)
@given(PRINTABLE)
def test_markdown_shows_any_printable_text_literally(value: str) -> None:
    assert _md_text("x " + escaping.md(value) + " y") == f"x {value} y"


# The template's Markdown contexts: where a value can sit, and the text the value's inline run
# must read as (the template's own words around it included).
CONTEXTS = {
    "paragraph start": ("{v}\n\nNext paragraph.\n", "{v}"),
    "mid paragraph": ("Each sample may take at most {v} seconds.\n", "Each sample may take at most {v} seconds."),
    "list item": ("Fields:\n\n- {v}\n- other\n", "{v}"),
    "heading": ("# Improve the agent: {v}\n\nText.\n", "Improve the agent: {v}"),
    "table cell": ("| split | access |\n|---|---|\n| {v} | viewable |\n", "{v}"),
}
SINGLE_LINE = {"heading", "table cell"}   # the template only puts validated names there


def _structure(markdown: str) -> tuple[list[str], list[str]]:
    """Block token types, and the text of every inline run (hard breaks as newlines)."""
    tokens = MarkdownIt("commonmark").enable("table").parse(markdown)
    blocks = [t.type for t in tokens if t.type != "inline"]
    texts = []
    for token in tokens:
        if token.type != "inline":
            continue
        parts = []
        for child in token.children or []:
            if child.type == "text":
                parts.append(child.content)
            elif child.type == "hardbreak":
                parts.append("\n")
            else:
                raise AssertionError(f"markup {child.type} in {markdown!r}")
        texts.append("".join(parts))
    return blocks, texts


@settings(max_examples=300, deadline=None)
@given(value=PRINTABLE, context=st.sampled_from(sorted(CONTEXTS)))
def test_a_value_never_changes_the_documents_structure(value: str, context: str) -> None:
    if context in SINGLE_LINE:
        value = value.replace("\n", " ").replace("\r", " ")
    # An empty value leaves an empty block; the template renders none (names, fields and paths are
    # never empty, and an empty description is left out).
    assume(value or context == "mid paragraph")
    template, expected = CONTEXTS[context]
    blocks, texts = _structure(template.format(v=escaping.md(value)))
    placeholder_blocks, placeholder_texts = _structure(template.format(v="x"))
    assert blocks == placeholder_blocks
    index = placeholder_texts.index(expected.format(v="x"))
    assert texts[index] == expected.format(v=value)


# Text an agent reads raw: nothing in these can change Markdown structure, so none is escaped.
ORDINARY = ["vero/foo", "question-answering program. It answers arithmetic;", "non_viewable",
            "it's 50% (roughly) done: a - b + c = d!", "C:\\Users\\agent", "a * b", "AT&T and a & b",
            "C# or F#", "issue #12", "about ~5 s", "what? e.g. this, that", "3.5 seconds",
            "see [the notes] for details", "snake_case_name", "x < y and y > z", "done. 1. 2. 3."]


@pytest.mark.parametrize("value", ORDINARY)
def test_ordinary_text_reads_exactly_as_written(value: str) -> None:
    assert escaping.md(value) == value
    assert _md_text("x " + escaping.md(value) + " y") == f"x {value} y"


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"[A-Za-z][A-Za-z0-9 .,;:!?'\"()/%@=+-]*", fullmatch=True))
def test_ordinary_sentences_are_never_escaped(value: str) -> None:
    value = value.rstrip()
    assert escaping.md(value) == value


@pytest.mark.parametrize(("value", "escaped"), [
    ("# heading", "\\# heading"), ("> quote", "\\> quote"), ("- item", "\\- item"), ("* item", "\\* item"),
    ("1. item", "1\\. item"), ("7) item", "7\\) item"), ("---", "\\---"), ("===", "\\==="),
    ("x\n===", "x\\\n\\==="), ("```sh", "\\`\\`\\`sh"), ("~~~", "\\~\\~\\~"),
    ("<!-- hide", "\\<!-- hide"), ("<div>", "\\<div>"), ("<https://x.y>", "\\<https://x.y>"),
    ("[a](http://x)", "\\[a\\](http://x)"), ("![i](x.png)", "!\\[i\\](x.png)"), ("[r]: http://x", "\\[r\\]: http://x"),
    ("a | b", "a \\| b"), ("*bold*", "\\*bold\\*"), ("_em_", "\\_em\\_"), ("`code`", "\\`code\\`"),
    ("&amp;", "\\&amp;"), ("&#35;", "\\&#35;"), ("name #", "name \\#"), ("back\\", "back\\\\"),
])
def test_structure_is_neutralised_where_it_would_start(value: str, escaped: str) -> None:
    assert escaping.md(value) == escaped


def test_markdown_control_characters_become_references() -> None:
    assert escaping.md("a\x01b") == "a&#1;b"
    assert escaping.md("\x1b[31m") == "&#27;\\[31m"


def test_md_code_spans() -> None:
    assert escaping.md_code("vero harbor eval") == "`vero harbor eval`"
    assert escaping.md_code("a`b") == "``a`b``"
    with pytest.raises(ValueError, match="line break"):
        escaping.md_code("a\nb")


def test_non_string_scalars() -> None:
    assert escaping.toml(True) == "true" and escaping.toml(3) == "3" and escaping.toml(1.5) == "1.5"
    assert escaping.toml(["a", 1]) == '["a", 1]'
    assert escaping.yaml(["$x"]) == '["$x"]' and escaping.compose(["$x"]) == '["$$x"]'
    with pytest.raises(ValueError, match="non-finite"):
        escaping.toml(float("nan"))
    with pytest.raises(TypeError):
        escaping.sh(True)
    with pytest.raises(TypeError):
        escaping.toml({"a": 1})  # type: ignore[arg-type]


def test_dockerfile_values_are_validated_not_escaped() -> None:
    assert escaping.image("vero/base:bookworm") == "vero/base:bookworm"
    assert escaping.docker_path("/opt/vero/x") == "/opt/vero/x"
    for bad in ("x y", "a\nRUN rm -rf /", "$(x)"):
        with pytest.raises(ValueError):
            escaping.image(bad)
        with pytest.raises(ValueError):
            escaping.docker_path(bad)


def test_templates_cannot_print_unescaped_values() -> None:
    template = environment().from_string("name = {{ name }}\n")
    with pytest.raises(UnescapedValueError, match="without a format filter"):
        template.render(name="x")
    assert environment().from_string("name = {{ name|toml }}\n").render(name='a"b') == 'name = "a\\"b"\n'


def test_render_reports_a_template_problem_as_a_vero_error() -> None:
    with pytest.raises(VeroError, match="cannot render task.toml.j2"):
        render("task.toml.j2")  # every variable is missing: StrictUndefined
