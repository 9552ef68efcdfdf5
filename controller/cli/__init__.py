"""The `controller` command line (typer + rich).

    cli/
      main.py     the app, the explicit registration of every command, error mapping
      options.py  options and parsers shared by commands (--runs-dir, durations, 5usd, grids)
      runs.py     start, resume, stop, rerun
      inspect.py  status, attempts, logs, report
      sandbox.py  sandbox exec, images build, doctor, reap (the only one touching the engine)
      render.py   rich panels and tables that fit the terminal, and JSON for scripts

Bad input gets one line naming the fix and exit status 2, never a traceback.
"""

from controller.cli.main import app, entry, main

__all__ = ["app", "entry", "main"]
