"""The ``camkit view`` subcommand: its arguments and what it does.

``camkit.cli`` adds the parser with :func:`add_parser` and calls :func:`view_command`; problems
(a missing store, a store that is a file, a port in use) are raised as one-line ``ValueError`` /
``FileNotFoundError``, which the CLI prints without a traceback (exit 1).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="camkit")
    >>> add_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["view", "store"])
    >>> args.host, args.port, args.open
    ('127.0.0.1', 8765, False)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "view_command"]


def _port(text: str) -> int:
    if not text.strip().isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0..65535 (0: any free port), got {text!r}")
    return int(text)


def add_parser(sub: Any) -> None:
    """Add ``camkit view`` to the CLI's subparsers."""
    view = sub.add_parser(
        "view", help="explore a store (camkit run) or camkit explain outputs in the browser (local, read-only)"
    )
    view.add_argument("path", type=Path, help="a store folder (camkit run --out) or a camkit explain --out folder")
    view.add_argument("--port", type=_port, default=8765, help="port to listen on (default: 8765; 0: any free port)")
    view.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; another address exposes the store)",
    )
    view.add_argument("--open", action="store_true", help="open the page in the default browser")
    view.add_argument("--export", type=Path, metavar="DIR", help="write the page as a folder that works from file://")
    view.add_argument("--limit", type=int, default=None, help="with --export: at most this many records")
    view.add_argument("--colormap", default="jet", help="heatmap colormap (default: jet)")


def _warm_up(colormap: str) -> None:
    """Import and build what drawing the first heatmap needs, before the address is printed."""
    import torch

    from camkit.explanation import open_image  # noqa: F401 - imported for its cost, now rather than on a request
    from camkit.viz.page import heatmap_png

    heatmap_png(torch.zeros(2, 2), (4, 4), colormap)


def view_command(args: argparse.Namespace) -> int:
    """Serve the page until Ctrl-C, or write it with ``--export``."""
    from camkit.runner.command import check_colormap
    from camkit.viewer._export import export_site
    from camkit.viewer._server import make_server
    from camkit.viewer._source import open_source

    check_colormap(args.colormap)
    source = open_source(args.path, args.colormap)
    if args.export is not None:
        count = export_site(source, args.export, limit=args.limit)
        print(f"wrote the viewer for {count} records to {args.export}/ (open {args.export / 'index.html'})")
        return 0
    server = make_server(source, args.host, args.port)
    _warm_up(args.colormap)
    print(f"camkit view: serving {args.path} at {server.url} (read-only; Ctrl-C stops)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"camkit view: listening on {args.host}: other machines can read this store", file=sys.stderr)
    if args.open:
        import webbrowser

        webbrowser.open(server.url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("camkit view: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0
