"""``python -m dynamics_bench`` and the ``dynamics-bench`` command. A Ctrl-C while torch and Hydra are imported is
held until the import is done (an import interrupted half-way can fail in another module, with a traceback), then
said in one line; inside the run, dynamics_bench.cli handles it."""
import signal
import sys


def main() -> None:
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        from dynamics_bench.cli import main as cli_main
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        print("dynamics-bench: interrupted while starting up", file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    cli_main()


if __name__ == "__main__":
    main()
