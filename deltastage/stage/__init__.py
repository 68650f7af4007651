"""The stage action: pull every ready peer's collect dir into today's staging dir, verified.

After rsync's split of roles, one module each:

- ``run``: all peers of a run (in parallel jobs), the daily dir, the lock, the daily indicator;
- ``peer``: one peer's attempts, retried with backoff on transport failures;
- ``attempt``: one attempt over one session, and the resources it holds;
- ``plan``: which listed files to stage, in which order, from which basis (``basis``);
- ``generator``: each fetch's temp file and its basis's signature, made live or presigned
  (``presign``);
- ``receiver``: each answer patched into its temp file, a big file read back as it arrives;
- ``committer``: batches synced, read back from the disk, verified and renamed into place
  (``readback``); it never touches the network;
- ``localcopy``: hard links and copies of files the master holds already; ``sparse``: holes
  kept holes, written or copied;
- ``peerdir``: the peer's staging dir (temp names, what a crashed run left, the journal of
  transfers in flight, extras);
- ``ownership``: modes and owners of what is staged; ``report``: what a run reports.
"""
