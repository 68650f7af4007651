import sys

from deltastage.rdiff import run_argv

if __name__ == "__main__":
    # Plain rdiff-like command lines run before cli.py, so they never import typer (~30 ms).
    code = run_argv(sys.argv[1:])
    if code is None and sys.argv[1:2] == ["agent"]:
        # the agent is started once per SSH connection: skip typer there too
        from deltastage.agent import run_argv as run_agent_argv

        code = run_agent_argv(sys.argv[1:])
    if code is None:
        from deltastage.cli import main

        main()
    sys.exit(code)
