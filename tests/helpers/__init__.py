"""What several test modules share, in one place.

- ``site``: a site on disk: the config file, the peers' collect dirs, what got staged.
- ``transports``: the byte pipes between a master and an agent (relays that cut or count,
  a replay, the real agent in a thread, a scripted agent) and a session proxy.
- ``hostile_agent``: a scripted agent that lies; ``hostile_master``: a raw master and a
  peer tree with every kind of thing a name can meet.
- ``sshd``: real OpenSSH daemons on 127.0.0.1 (pytest fixtures, loaded by conftest).
- ``naive_rsync``: a plain rsync delta to compare the delta core against.
"""
