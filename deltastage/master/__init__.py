"""The master's end of the conversation with a peer's agent.

``session`` speaks the protocol (requests and their answers), checking a listing with
``listing`` and answering the agent's refinement requests with ``refinement``; ``pipeline``
decides which fetch requests go ahead of the answers still to be read, and ``connect`` opens
a session with a configured peer.
"""
