"""The embedded server is shared by the processes of one data directory: the last one
to let go stops it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ledger.embedded import EmbeddedPostgres

CHILD = """
import sys
from pathlib import Path
from ledger.embedded import EmbeddedPostgres
server = EmbeddedPostgres(Path(sys.argv[1]))
server.acquire()
print("stopped" if server.release() else "kept")
"""


def test_the_last_process_to_let_go_stops_the_server(tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path)
    server.acquire()
    try:
        child = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path)], capture_output=True, text=True,
                               timeout=120, check=True)
        assert child.stdout.strip() == "kept"  # this process still uses it
        assert server.is_running()
    finally:
        assert server.release()
    assert not server.is_running()
    # A process that died without letting go does not keep it alive for the others.
    child = subprocess.run([sys.executable, "-c", CHILD.replace('print("stopped" if server.release() else "kept")',
                                                                  "import os; os._exit(0)"), str(tmp_path)],
                           timeout=120, check=True)
    server.acquire()
    assert server.release() and not server.is_running()
