"""Train small, test large: the FixRes recipe from the command line (`python train.py --help`).

The jobs, their options and the command line live in pipeline/ (cli.py, jobs.py, options.py).
"""

from app.cli import main
from pipeline.console import run_command

if __name__ == "__main__":
    run_command(main)
