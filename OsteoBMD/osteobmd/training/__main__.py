"""`python -m osteobmd.training segmentation|regression DATA ...`"""

from .cli import main

raise SystemExit(main())
