"""The entry point of both `deltastage` and `python -m deltastage`.

Plain rdiff-like command lines and the agent (started once per SSH connection) are run before
cli.py is imported: typer builds a pydantic model per parameter, ~0.1 s that a 0.2 s patch or
every agent start would pay. A plain stage command line is parsed here too (stageargv.py):
it starts connecting to its first peers at once, and the stage runs without typer's
parsing. Anything else, including --help and bad input, goes to typer.
"""

import sys


def main() -> None:
    # paramiko imports invoke only to run ssh_config "Match exec" lines, and deltastage reads
    # no ssh_config: a None entry makes that optional import fail as if invoke were not
    # installed, which saves ~45 ms of every stage or check run (before it can connect).
    sys.modules.setdefault("invoke", None)  # type: ignore[arg-type]
    argv = sys.argv[1:]
    from deltastage.rdiff import run_argv

    code = run_argv(argv)
    if code is None and argv[:1] == ["agent"]:
        from deltastage.agent import run_argv as run_agent_argv

        code = run_agent_argv(argv)
    stage_args = None
    if code is None and argv[:1] == ["stage"]:
        from deltastage.stageargv import parse_stage_argv

        stage_args = parse_stage_argv(argv[1:])
        if stage_args is not None:
            from deltastage.connect import open_early

            open_early(stage_args)
    if code is None:
        from deltastage.cli import main as cli_main

        cli_main(stage_args)
        return
    sys.exit(code)


if __name__ == "__main__":
    main()
