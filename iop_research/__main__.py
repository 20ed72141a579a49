"""``python -m iop_research ...`` is the ``iop-research`` command."""
from iop_research.reports.cli import main

raise SystemExit(main())
