"""The entry point of both `deltastage` and `python -m deltastage`.

The rdiff-like commands and the agent (started once per SSH connection) are run before
cli.py is imported: typer builds a model per parameter, start-up that a short patch or every
agent start would pay. Anything else, including --help and bad input, goes to typer.
"""

import sys


def main() -> None:
    # paramiko imports invoke only to run ssh_config "Match exec" lines, and deltastage reads
    # no ssh_config: a None entry makes that optional import fail as if invoke were absent.
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    argv = sys.argv[1:]
    from deltastage.rdiff import run_argv

    code = run_argv(argv)
    if code is None and argv[:1] == ["agent"]:
        from deltastage.agent import run_argv as run_agent_argv

        code = run_agent_argv(argv)
    if code is None:
        from deltastage.cli import main as cli_main

        cli_main()
        return
    sys.exit(code)


if __name__ == "__main__":
    main()
