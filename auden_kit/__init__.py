"""auden-kit: a modular speech toolkit (Lhotse data, Zipformer encoders, staged recipes).

    import auden_kit
    m = auden_kit.load("exp/model-avg")        # a model folder
    text = m.transcribe("a.wav").text

Errors meant for users are :class:`auden_kit.AudenKitError` (message names the file, cut or key).
"""

__version__ = "0.2.0"

from auden_kit.errors import UserError as AudenKitError  # noqa: E402


def load(model_dir, device: str = "cpu"):
    """Load a model folder for inference; see :mod:`auden_kit.api`."""
    from auden_kit.api import load as _load

    return _load(model_dir, device=device)


__all__ = ["AudenKitError", "load", "__version__"]
