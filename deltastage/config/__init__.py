"""Configuration: deltastage's TOML file, and an importer for Cedar Backup 3's XML.

Both loaders validate the whole file before returning anything: a config is either complete
and valid or a ``ConfigError`` whose message names the file, every offending key
(``peers[2].ignore_failures``, or ``stage/peer[2]/ignore_failures`` in Cedar's XML) and why,
one problem per line.

- ``model``: the Config, Options and PeerConfig dataclasses, and Cedar's ignore_failures rule;
  each config key is described once, on its field (``schema``: kinds of values, help);
- ``toml``: reading and writing deltastage's TOML file, and the README's table of keys;
- ``cedar``: reading Cedar Backup 3's XML (``sshargs``: the ssh/scp command lines in it),
  imported from its own module by the commands that take ``--cedar-config``, so that a TOML
  config never loads the XML reader;
- ``values``: parsers for single values; ``problems``: collecting every problem of a file;
  ``checks``: what both loaders check beyond single values.
"""

from deltastage.config.model import (
    DEFAULT_AGENT_COMMAND,
    IGNORE_FAILURE_MODES,
    WEEKDAYS,
    Config,
    IgnoreFailures,
    Options,
    PeerConfig,
    PeerType,
    failure_ignored,
)
from deltastage.config.toml import config_to_toml, load_config
from deltastage.config.values import parse_gateway, parse_mode

__all__ = [
    "DEFAULT_AGENT_COMMAND",
    "IGNORE_FAILURE_MODES",
    "WEEKDAYS",
    "Config",
    "IgnoreFailures",
    "Options",
    "PeerConfig",
    "PeerType",
    "config_to_toml",
    "failure_ignored",
    "load_config",
    "parse_gateway",
    "parse_mode",
]
