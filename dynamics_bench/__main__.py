"""``python -m dynamics_bench`` and the ``dynamics-bench`` command: a Ctrl-C while torch and Hydra are imported
says so in one line (inside the run, dynamics_bench.cli handles it)."""
import sys


def main() -> None:
    try:
        from dynamics_bench.cli import main as cli_main
    except KeyboardInterrupt:
        print("dynamics-bench: interrupted while starting up", file=sys.stderr)
        sys.exit(130)
    cli_main()


if __name__ == "__main__":
    main()
