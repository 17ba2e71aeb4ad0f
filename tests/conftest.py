"""Settings for the whole suite (not a place for fixtures: helpers are plain modules next to the tests).

Hypothesis' per-example deadline measures wall-clock time, which on a loaded 2-core machine
(CI running the database servers, the daemon tests' subprocesses) says nothing about the code:
it is off; the number of examples still bounds each property test.
"""

from hypothesis import settings

settings.register_profile("smsgw", deadline=None)
settings.load_profile("smsgw")
