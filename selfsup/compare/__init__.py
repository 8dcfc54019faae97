"""``selfsup compare``: train methods under one budget, evaluate them, and write a report.

* :mod:`~selfsup.compare.plan`: which runs (methods, the supervised baseline, ablation arms) and their folders;
* :mod:`~selfsup.compare.runner`: train (or resume, or skip) and evaluate each run;
* :mod:`~selfsup.compare.supervised`: the supervised reference ceiling, trained by the same engine;
* :mod:`~selfsup.compare.results`: read a run folder back;
* :mod:`~selfsup.compare.analysis`: the measured answers to the ablation questions, with their noise;
* :mod:`~selfsup.compare.plots` and :mod:`~selfsup.compare.report`: figures, ``report.md`` and ``report.html``.
"""

from selfsup.compare.plan import ABLATIONS, Ablation, Plan, RunSpec, expand_methods, plan_runs
from selfsup.compare.runner import CompareOptions, run_compare

__all__ = ["ABLATIONS", "Ablation", "CompareOptions", "Plan", "RunSpec", "expand_methods", "plan_runs", "run_compare"]
