"""The entry point of both `deltastage` and `python -m deltastage`.

The command lines ``fastargv`` specifies (the agent, the rdiff-like commands, a stage) run
without importing typer; anything else, including --help and bad input, goes to the typer CLI.
"""

import sys

from deltastage import fastargv


def main() -> None:
    # paramiko imports invoke only to run ssh_config "Match exec" lines, and deltastage reads
    # no ssh_config: a None entry makes that optional import fail as if invoke were absent.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    code = fastargv.run(sys.argv[1:])
    if code is None:
        from deltastage.cli.main import main as cli_main

        cli_main()
        return
    sys.exit(code)


if __name__ == "__main__":
    main()
