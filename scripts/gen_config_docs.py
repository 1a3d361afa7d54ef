"""Write docs/configuration.md from the config schema (`--check`: exit 1 when it is stale).

    .venv/bin/python scripts/gen_config_docs.py [--check]

The reference is generated, never edited by hand: field descriptions live in
mbt_online/config/schema.py, and tests/test_config.py fails when the committed file differs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mbt_online.config.docs import markdown

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Only check the file is current.")
    args = parser.parse_args()
    text = markdown()
    if args.check:
        current = DOCS.read_text() if DOCS.is_file() else ""
        if current != text:
            print(f"{DOCS} is stale: run scripts/gen_config_docs.py", file=sys.stderr)
            return 1
        return 0
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(text)
    print(f"written: {DOCS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
