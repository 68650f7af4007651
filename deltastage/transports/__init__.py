"""Transports: the only code that touches pipes, sockets and SSH."""
