"""Stand-ins and fixtures shared by the tests and the benchmarks; the farm never imports them.

- `velocity_fields`: exact analytic flow-matching velocities and `FunctionExecutor`, an
  executor over such a function, to check the window engine's arithmetic exactly.
- `ray_head`: a private local Ray head with the Jobs API, cleaned up after use.
- `clips`: synthetic video clips (ad-like scenes, noise texture) and a re-uploader's resize.
"""
