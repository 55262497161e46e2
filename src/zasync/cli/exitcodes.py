"""The ``zasync`` command's exit codes, named in one place (the top-level
``--help`` lists them too)."""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # the operation failed (a job not found, a bad status...)
EXIT_USAGE = 2  # bad flags (argparse's own code)
EXIT_STORAGE = 3  # the database could not be opened
EXIT_INTERRUPTED = 130  # a second Ctrl-C: stopped at once (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # the reader of stdout went away (`| head`): 128 + SIGPIPE
