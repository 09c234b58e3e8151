"""`python -m osteobmd ...`: the worker the Slicer panel starts with its own Python."""

from .cli import main

raise SystemExit(main())
