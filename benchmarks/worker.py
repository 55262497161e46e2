"""A worker process that starts on a signal from the harness.

``python -m benchmarks.worker --db URI [--threads N]`` imports the jobs,
opens the database, prints ``ready``, waits for a line on its standard input,
then starts a :class:`zasync.dispatcher.Dispatcher` with the defaults of
``zasync worker`` and prints ``started <time>``. It stops on SIGTERM (or when
its standard input closes), as ``zasync worker`` does.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

import benchmarks.jobs  # noqa: F401 - the jobs it runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.worker")
    parser.add_argument("--db", required=True)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args(argv)

    from zasync.dispatcher import Dispatcher
    from zasync.storage import open_db

    db = open_db(args.db)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    print("ready", flush=True)
    if not sys.stdin.readline():
        db.close()
        return 1
    started = time.time()
    dispatcher = Dispatcher(db, threads=args.threads).start()
    print(f"started {started!r}", flush=True)

    def watch_stdin():
        sys.stdin.read()  # returns when the harness closes the pipe
        stopping.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    while not stopping.wait(1.0):
        pass
    clean = dispatcher.stop(30)
    db.close()
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
