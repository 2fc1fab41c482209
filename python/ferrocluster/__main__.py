"""``python -m ferrocluster …`` and the ``ferrocluster`` console script: the whole ``cluster``
command line (start, stop, status, engine, controller, map, call, …), compiled into the
extension.

When it launches itself (the controller and engines of ``start``), it runs
``[sys.executable, "-m", "ferrocluster"]`` (``CLUSTER_PROGRAM``), so nothing else needs to be
on PATH; an engine started this way runs its Python tasks with the same interpreter unless
``--python``, ``python`` in cluster.toml or ``CLUSTER_PYTHON`` says otherwise.
"""

import json
import os
import sys


def main(argv=None):
    args = list(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("CLUSTER_PROGRAM", json.dumps([sys.executable, "-m", "ferrocluster"]))
    if args[:1] == ["engine"]:
        os.environ.setdefault("CLUSTER_PYTHON", sys.executable)
    from ferrocluster._native import cli_main

    code = cli_main(["cluster"] + args)
    sys.stdout.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
