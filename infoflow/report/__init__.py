"""Reading results: tables back into pandas (:mod:`.load`), the figures (:mod:`.plots`) and the
HTML report (:mod:`.page`, ``python -m infoflow.report``).

Imports: pandas, numpy, pyarrow, matplotlib (only :mod:`.plots` and :mod:`.page`), the base
modules (:mod:`infoflow.io`, :mod:`infoflow.errors`) and :mod:`infoflow.estimators` for the
saturation note. Never torch at import time, never the sweep machinery or training.
"""
