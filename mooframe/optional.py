"""Optional dependencies: which extra of `pip install 'mooframe[...]'` brings each one.

The core (problems, models, solvers, `solve`, results, indicators) needs none of them; a module that does imports
them under `requires(extra)`, so a missing one is named with the command that installs it:

    with requires("clip"):
        import open_clip
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

EXTRAS = {
    "clip": "open_clip, Hugging Face CLIP, the image-classification problems",
    "text": "GPT-2 and the GLUE problems, PEFT LoRA experts",
    "lp": "EPO's HiGHS and cvxpy LP backends",
    "digits": "the digits problem and `mooframe demo`",
}


@contextmanager
def requires(*extras: str) -> Iterator[None]:
    """Turn a third-party module missing inside the block into "X is not installed: pip install 'mooframe[E]'"."""
    unknown = [extra for extra in extras if extra not in EXTRAS]
    if unknown or not extras:
        raise ValueError(f"extras {list(extras)}: pass names among {', '.join(EXTRAS)}")
    try:
        yield
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        if not missing or missing == "mooframe":
            raise
        commands = " or ".join(f"pip install 'mooframe[{extra}]'" for extra in extras)
        uses = "; ".join(EXTRAS[extra] for extra in extras)
        raise ModuleNotFoundError(f"{missing} is not installed: {commands} ({uses})", name=error.name) from error
