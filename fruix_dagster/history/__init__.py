"""Build history: every past materialization of the artifacts as a pandas DataFrame.

Plain Python (pandas, matplotlib); never imports dagster.  The Dagster layer
(``fruix_dagster.defs.history``) reads the instance page by page and hands
plain dict rows to :func:`history_frame`.

* :mod:`.frame`   rows → DataFrame (one row per artifact materialization)
* :mod:`.checks`  ``size_regression`` and ``reproducible`` over the frame
* :mod:`.diff`    differing paths of two stored manifests
* :mod:`.publish` Parquet, CSV, PNG chart, Markdown table of the last builds
* :mod:`.render`  the CLI's table, CSV and JSON
* :mod:`.compare` two builds of one source compared (the rebuild check's result;
  the check itself is :mod:`fruix_dagster.build.rebuild_check`)
"""

from fruix_dagster.history.checks import CheckOutcome, reproducible, size_regression
from fruix_dagster.history.frame import ARTIFACTS, COLUMNS, INPUT_ASSETS, frame_of, history_frame

__all__ = ["ARTIFACTS", "COLUMNS", "CheckOutcome", "INPUT_ASSETS", "frame_of", "history_frame",
           "reproducible", "size_regression"]
