"""Serve a trained PTalker over a WebSocket: clients stream 16 kHz float32 audio in and receive the
animated frames as soon as the look-ahead makes them final. The protocol: ptalker/server.py.

    python serve.py                              # the bundled model on ws://127.0.0.1:8765
    python serve.py --checkpoint VOCASET/save/vocaset.pth --host 0.0.0.0 --port 9000

A client in Python (while the server runs):

    from ptalker.server import stream_file
    frames = stream_file("ws://127.0.0.1:8765", "demo/wav/synthtalk_sample.wav")   # (T, V*3)
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Threads that spin while waiting stall badly when the CPU is shared with other busy processes;
# passive waiting costs nothing measurable on an idle machine. Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ptalker.cli import Parser
from ptalker.errors import UserError, print_user_error

ROOT = Path(__file__).resolve().parent
BUNDLED_MODEL = Path("demo/models/synthtalk.pth")   # served when no --checkpoint is given
DEFAULT_PORT = 8765
CLIENT_EXAMPLE = """a client in Python, once the server prints 'listening on ...':
  from ptalker.server import stream_file
  frames = stream_file("ws://127.0.0.1:8765", "demo/wav/synthtalk_sample.wav")   # (T, V*3)"""


def port_number(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give 0-65535 (0 = any free port)")
    return port


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(description="Serve a PTalker model over a WebSocket: float32 16 kHz speech in, animated "
                           "vertices out, several clients at once (protocol: ptalker/server.py).",
               epilog=CLIENT_EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=None, help=f"model file (default: the bundled {BUNDLED_MODEL})")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for all)")
    p.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                   help=f"TCP port (default: {DEFAULT_PORT}; 0 picks a free one, printed at start)")
    p.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (default: torch's choice; 1 is often fastest on a busy machine)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        from ptalker.server import run_server

        return run_server(args, ROOT / BUNDLED_MODEL)
    except UserError as exc:
        return print_user_error(exc)


if __name__ == "__main__":
    sys.exit(main())

