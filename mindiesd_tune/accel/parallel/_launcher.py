"""torch.distributed.run, as the rank groups mindiesd-tune starts run it: the same launcher
(``parse_args`` and ``run``), without its failure report.

When a rank fails, torchrun logs every stopped rank and raises ``ChildFailedError``, whose
traceback and table repeat on stderr what rank 0 already said in one line. Here the launcher's
own logs stay quiet unless they are errors of the launcher itself, the report is dropped, and
the first failing rank's exit code is the launcher's; a rank killed by a signal is named in one
line with the phase it was in (``watch.PhaseLog``), since no rank could say so (but not
SIGTERM, which is how the launcher stops the ranks left when one failed). The line is also
written to ``failure`` in the group's phase folder, for a driver whose stderr is not a terminal.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

from .launch import EXIT_DIR_ENV
from .watch import PHASE_DIR_ENV, RankDied, read_phase


def main(argv: list[str] | None = None) -> int:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
    except ChildFailedError as e:
        failures = sorted(e.failures.items())
        done = os.environ.get(EXIT_DIR_ENV)  # where a CLI rank notes the end of its command
        for rank, failure in failures:
            # a signal: the rank could not report it; SIGTERM is the launcher stopping the others;
            # a rank that noted its exit code had finished its command and died in teardown
            finished = done is not None and Path(done, f"exit-{rank}").is_file()
            if failure.exitcode < 0 and failure.exitcode != -signal.SIGTERM and not finished:
                _report(RankDied.of(rank, failure.exitcode, read_phase(os.environ.get(PHASE_DIR_ENV), rank)))
        codes = [f.exitcode for _, f in failures if f.exitcode > 0]
        return codes[0] if codes else 1
    return 0


def _report(died: RankDied) -> None:
    print(f"mindiesd-tune: error: {died}", file=sys.stderr)
    folder = os.environ.get(PHASE_DIR_ENV)
    if folder and os.path.isdir(folder) and not Path(folder, "failure").exists():
        Path(folder, "failure").write_text(str(died))


if __name__ == "__main__":
    sys.exit(main())
