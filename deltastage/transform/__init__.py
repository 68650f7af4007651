"""Compressed files rebuilt bit for bit: recognise, prove a recipe, rebuild (no I/O).

A gzip or bzip2 file whose exact bytes zlib or libbzip2 reproduce from its decompressed
content can travel as that content (which deltas well) plus a small recipe. Pure like
``delta/``: bytes in, bytes out, a ``read_at(offset, n)`` callable for the file searched;
streaming throughout, and no numpy.

Layout: ``gzipheader`` (the RFC 1952 member header), ``recipe`` (the recipe and its binary
encoding), ``inflate`` (the content of a file, bounded), ``rebuild`` (content in, compressed
bytes out), ``search`` (recognise by content, decompress within bounds, prove a recipe on the
whole file). Import each name from its module.
"""
