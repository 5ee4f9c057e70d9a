"""``python -m regnet.cli``: the ``regnet`` command line."""

from regnet.cli import main

raise SystemExit(main())
