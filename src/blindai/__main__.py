"""``python -m blindai``: the CLI."""

from blindai.cli import main

raise SystemExit(main())
