"""rdiff-like file commands over the delta core: signature, delta, patch ("-" = stdin/stdout).

Layout: ``files`` (inputs, outputs written beside the target and renamed, the writer thread,
the basis ring), ``sigdelta`` (``signature_file``, ``delta_file``), ``patch`` (``patch_file``,
which loads neither numpy nor the matcher, nor zstandard for a delta with no compressed
literal: a short patch is mostly start-up).

Outputs go to a temporary file beside the target and are renamed into place only when the
whole operation succeeded, so a failed run never leaves a partial OUT behind. Unlike rdiff,
``patch_file`` checks the basis' xxh3-128 against the delta's header and refuses a delta made
against another basis: while patching into a file (one pass over the basis), or before the
first byte when the output is a pipe.

A file output is written by a second thread: ``os.write`` releases the GIL, so the kernel's
copy into the page cache (the largest cost of a patch) runs on another core while this
thread reads the basis and hashes. Patch reads the basis into a small ring of reused
buffers that go back into use only once the writer is done with them; memory stays bounded
by the ring and the writer's queue, whatever the file size.

``signature_file`` and ``patch_file`` take 1 to ``MAX_BASES`` bases: a delta made from a
signature of several bases copies from all of them, and patch reads them in the same order.

The typer commands and the typer-free start (``fastargv``) both call these functions.
"""
