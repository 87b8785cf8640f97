"""The farm as a Ray Serve application: HTTP Api → Director → batched Renderer pool.

`farm.serve.app:build_app(FarmAppArgs)` builds it; see farm/serve/app.py for how to run it.
"""

from farm.serve.wire import CreateVideoRequest, FarmAppArgs, Video

__all__ = ["CreateVideoRequest", "FarmAppArgs", "Video"]
