"""Helpers shared by CLI commands: logging set-up, audio piped to stdin."""

from __future__ import annotations

import contextlib
import logging
import sys


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    for h in logging.getLogger().handlers:
        h.addFilter(_quiet_third_party)


def _quiet_third_party(record: logging.LogRecord) -> bool:
    """Drop the INFO line Lhotse logs on the root logger whenever it falls back to audioread for a
    file it could not read (the file's own error follows, naming it)."""
    return not (record.name == "root" and record.levelno <= logging.INFO
                and str(record.msg).startswith("Using audioread"))


STDIN = "-"  # a file argument that reads the audio piped in


def require_piped(example: str) -> None:
    """A UserError, with ``example`` (a command line), when '-' is given but nothing is piped in."""
    from auden_kit.errors import UserError

    if sys.stdin is None or sys.stdin.isatty():
        raise UserError(f"'-' reads the audio piped to stdin, but nothing is piped in: e.g. `{example}`")


@contextlib.contextmanager
def stdin_audio(files):
    """Audio file arguments where ``-`` stands for the audio piped to stdin (any format a file may
    have: ``ffmpeg -i talk.mp4 -f wav - | auden-kit decode -m DIR -``). The piped bytes are
    spooled to a temporary file, so a long recording is still read block by block. Yields the
    paths to read and a function that writes ``-`` for the spool's path in any text (a result's id,
    an error message)."""
    import shutil
    import tempfile
    from pathlib import Path

    from auden_kit.errors import UserError

    files = list(files or [])
    n = sum(str(f) == STDIN for f in files)
    if n == 0:
        yield files, str
        return
    if n > 1:
        raise UserError("'-' (the audio piped to stdin) may be given once")
    require_piped("ffmpeg -i talk.mp4 -f wav - | auden-kit decode --model DIR -")
    with tempfile.TemporaryDirectory(prefix="auden-kit-stdin-") as tmp:
        spool = Path(tmp) / "stdin"  # not '-': libsndfile reads a path '-' as its own stdin
        with open(spool, "wb") as out:
            shutil.copyfileobj(sys.stdin.buffer, out, 1 << 20)
        if spool.stat().st_size == 0:
            raise UserError("'-': nothing was piped to stdin (0 bytes)")
        yield [spool if str(f) == STDIN else f for f in files], lambda text: str(text).replace(str(spool), STDIN)
