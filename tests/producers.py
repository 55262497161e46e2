"""Producers in several threads, for the tests of concurrent enqueueing."""

from __future__ import annotations

import threading
from collections.abc import Callable

import transaction
from ZODB.POSException import ConflictError

from zasync.interfaces import KEY


def produce_concurrently(
    db,
    *,
    producers: int,
    per_producer: int,
    make_job: Callable[[int, int], object],
    queue_name: str = "",
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Start ``producers`` threads that each commit ``per_producer`` jobs
    (``make_job(n, i)``), one per transaction, all starting at once and
    trying again after a ConflictError. Returns the oids of the committed
    jobs and the (producer, index) of every conflict. Raises the first
    error a producer met."""
    oids: list[bytes] = []
    conflicts: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    barrier = threading.Barrier(producers)

    def produce(n: int) -> None:
        tm = transaction.TransactionManager(explicit=True)
        conn = db.open(transaction_manager=tm)
        try:
            barrier.wait()
            for i in range(per_producer):
                while True:
                    tm.begin()
                    job = conn.root()[KEY][queue_name].put(make_job(n, i))
                    try:
                        tm.commit()
                        break
                    except ConflictError:
                        tm.abort()
                        with lock:
                            conflicts.append((n, i))
                with lock:
                    oids.append(job._p_oid)
        except BaseException as e:  # reported to the test below
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    if errors:
        raise errors[0]
    return oids, conflicts
