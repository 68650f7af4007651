"""deltastage: pull nightly backups from many peers with the rsync algorithm, verified."""

__version__ = "0.1.0"

__all__ = ["__version__"]
