"""Drop-in compatibility modules for other rsync libraries' APIs, on top of the delta core."""
