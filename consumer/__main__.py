"""python -m consumer: the same as the speechjobs command."""

from consumer.cli import main

raise SystemExit(main())
