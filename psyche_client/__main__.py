"""`python -m psyche_client …` runs the command line; torchrun starts it this way
(`torchrun --nproc-per-node N -m psyche_client join …`)."""

from psyche_client.cli.app import main

raise SystemExit(main())
