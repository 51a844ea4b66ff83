"""Reading Markdown the way a CommonMark renderer does (markdown-it-py, which rich brings along)."""

from __future__ import annotations

from markdown_it import MarkdownIt  # pants: no-infer-dep


def inline_texts(markdown: str) -> list[str]:
    """The literal text of every inline run (paragraph, list item, table cell, heading).

    Hard breaks count as newlines; markup tokens (emphasis, links, HTML) contribute no text, so a
    value whose `*`, `[`, `<` became markup is not found intact in the result.
    """
    texts = []
    for token in MarkdownIt("commonmark").enable("table").parse(markdown):
        if token.type != "inline":
            continue
        parts = []
        for child in token.children or []:
            if child.type == "text":
                parts.append(child.content)
            elif child.type == "hardbreak":
                parts.append("\n")
            elif child.type == "softbreak":
                parts.append(" ")
            elif child.type == "code_inline":
                parts.append(f"`{child.content}`")
        texts.append("".join(parts))
    return texts
