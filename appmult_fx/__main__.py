"""``python -m appmult_fx`` runs the command line."""

from appmult_fx.cli import main

raise SystemExit(main())
