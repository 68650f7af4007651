"""The rdiff-like commands: the delta core on plain files ("-" = stdin/stdout).

A plain command line for them usually runs without typer (``fastargv``); these are the
same commands for everything else: help, unusual spellings, refusals.
"""

from __future__ import annotations

from typing import Annotated

import typer

from deltastage.cli.app import run_guarded

__all__ = ["delta", "patch", "signature"]

PathArg = Annotated[str, typer.Argument(help="A file path, or - for stdin/stdout.")]
BasesArg = Annotated[
    list[str],
    typer.Argument(
        metavar="BASIS...",
        help="1 to 8 basis files (one may be - for stdin); a delta copies from all of them.",
    ),
]


def signature(
    basis: BasesArg,
    sig: PathArg,
    block_size: Annotated[
        int | None,
        typer.Option(
            "--block-size",
            "-b",
            metavar="BYTES",
            show_default="sqrt(size) of one BASIS; of several, sqrt(total*total/largest/count)",
            help="Block size.",
        ),
    ] = None,
    strong_len: Annotated[
        int | None,
        typer.Option(
            "--strong-len",
            "-S",
            metavar="BYTES",
            show_default="as rsync: enough for BASIS's size and block size",
            help="Strong hash bytes per block.",
        ),
    ] = None,
) -> None:
    """Write the signature of the BASIS files to SIG (like rdiff signature)."""
    from deltastage.rdiff import sigdelta

    run_guarded(
        lambda: sigdelta.signature_file(basis, sig, block_size=block_size, strong_len=strong_len)
    )


def delta(
    sig: PathArg,
    new: PathArg,
    delta_out: Annotated[str, typer.Argument(metavar="DELTA", help="Output delta, or -.")],
    level: Annotated[
        int,
        typer.Option(
            "--level", "-l", min=0, max=22, metavar="N", help="zstd level for literals, 0 = off."
        ),
    ] = 3,
) -> None:
    """Write the delta that turns SIG's bases into NEW (like rdiff delta)."""
    from deltastage.rdiff import sigdelta

    run_guarded(lambda: sigdelta.delta_file(sig, new, delta_out, level=level))


def patch(
    basis: Annotated[
        list[str],
        typer.Argument(
            metavar="BASIS...", help="The basis files of DELTA's signature, in the same order."
        ),
    ],
    delta_in: Annotated[str, typer.Argument(metavar="DELTA", help="Delta file, or -.")],
    out: PathArg,
) -> None:
    """Apply DELTA to the BASIS files and write OUT, verified (like rdiff patch, but checked)."""
    from deltastage.rdiff import patch as rdiff_patch

    run_guarded(lambda: rdiff_patch.patch_file(basis, delta_in, out))
