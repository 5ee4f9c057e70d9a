"""``python -m regnet``: the ``regnet`` command line."""

from regnet.cli import main

raise SystemExit(main())
