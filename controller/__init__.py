"""sandlab's host controller: plan, code, guard, repair, run, analyze, refine, report.

It never imports docker: it receives a Sandbox by injection.
"""

__version__ = "0.1.0"
