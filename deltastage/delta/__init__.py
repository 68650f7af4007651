"""The delta core: pure rsync-style signature, delta and patch (bytes in, bytes out, no I/O).

Layout: ``params`` (block size, bounds), ``rolling`` (vectorised weak hash), ``signature``
(build, encode, decode), ``matcher`` (the search, as COPY/LITERAL ops), ``ops`` (the two op
types), ``wire`` (the delta stream's format), ``patch`` (the patcher), ``codec`` (the
encoder), ``refine`` (a delta refined around its edits), ``sketch`` (content sketches, to
choose bases). Import each name from its module: this file imports nothing, so the patcher
(the rdiff-like ``patch`` and the master's hottest path) loads without numpy, which only the
signature, the matcher and the sketches need.
"""
