"""`python -m psyche_client.cli …` runs the command line (the tests and the demo use this)."""

from psyche_client.cli.app import main

raise SystemExit(main())
