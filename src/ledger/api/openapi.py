"""Writes openapi/openapi.json from the app: `python -m ledger.api.openapi`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ledger.api.app import create_app
from ledger.settings import Settings

OUTPUT = Path(__file__).resolve().parents[3] / "openapi" / "openapi.json"


def spec() -> dict[str, Any]:
    return create_app(Settings()).openapi()


def render() -> str:
    return json.dumps(spec(), indent=2, sort_keys=False) + "\n"


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
