"""``python -m infoflow.report``: the report of one or more sweeps (:func:`.page.main`)."""

from infoflow.report.page import main

raise SystemExit(main())
