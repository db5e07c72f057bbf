"""``python -m appmult_fx`` runs the command line."""

from appmult_fx.cli import console_main

raise SystemExit(console_main())
