"""Makes docs/images/tui.svg: fastbook-edge's terminal UI on a real broker, sequencer and book.

    .venv/bin/python docs/images/make_tui_screenshot.py      # then: chromium --headless ... (README)

Starts `fastbook-broker` (amqtt + the BTC-USD sequencer) on a free loopback port in a temporary
directory, rests a few orders of a market maker through the Edge API, opens the TUI for `bob`
headless (textual's pilot, 80x24), types orders as a person would, and saves the screen.
"""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastbook.apps.cli.edge import EdgeProgram, parser
from fastbook.apps.tui.app import EdgeApp
from fastbook.edge.client import Edge

OUT = Path(__file__).with_name("tui.svg")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def drive(bob: EdgeProgram) -> None:
    app = EdgeApp(bob)
    async with app.run_test(size=(80, 24)) as pilot:
        for line in ("buy 0.5 @ 99.90", "buy 1.2 @ 99.75", "sell 0.8 @ 100.30", "buy 0.4 @ 100.10"):
            await pilot.press(*line, "enter")
            await pilot.pause(0.4)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and bob.session.view().fills < 1:
            await pilot.pause(0.1)
        await pilot.pause(0.6)
        app.save_screenshot(OUT.name, str(OUT.parent))


def main() -> int:
    port = free_port()
    url = f"mqtt://127.0.0.1:{port}"
    bin_dir = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as data:
        broker = subprocess.Popen([str(bin_dir / "fastbook-broker"), "--port", str(port), "--data-dir", data],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with Edge("maker", url, "BTC-USD") as maker:
                if not maker.wait_synced(30):
                    raise SystemExit("the maker's replica did not sync")
                for i in range(8):
                    maker.submit(side="buy", price=f"{99.95 - i * 0.05:.2f}", qty=f"{1 + i * 0.25:.3f}").result(10)
                    maker.submit(side="sell", price=f"{100.05 + i * 0.05:.2f}", qty=f"{0.75 + i * 0.5:.3f}").result(10)
                maker.submit(side="buy", price="100.05", qty="0.5").result(10)  # a trade for the tape
                args = parser().parse_args(["--client-id", "bob", "--broker", url])
                bob = EdgeProgram(args, io.StringIO())
                bob.start()
                try:
                    if not bob.edge.wait_synced(30):
                        raise SystemExit("bob's replica did not sync")
                    asyncio.run(drive(bob))
                finally:
                    bob.stop()
        finally:
            broker.terminate()
            broker.wait(10)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
