"""Entry point of the Mode B runner PEX (`./pants run //runner -- ...`)."""

from __future__ import annotations

from vero.modeb.runner.cli import main

if __name__ == "__main__":
    main()
