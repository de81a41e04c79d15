"""The server's routes, one module per kind of request, each ``decode_request → predict → encode_response``:

- :mod:`~genforge.serve.routes.system`: ``/``, ``/healthz``, ``/readyz``, ``/metrics``, ``/v1/models``;
- :mod:`~genforge.serve.routes.completions`: ``/v1/completions`` (and SSE streaming), ``/v1/chat/completions``;
- :mod:`~genforge.serve.routes.images`: ``/v1/images/generations``;
- :mod:`~genforge.serve.routes.edits`: ``/v1/images/edits`` (img2img, or inpainting with a mask).
"""

from __future__ import annotations

from genforge.serve.routes import completions, edits, images, system

ROUTERS = (system.router, completions.router, images.router, edits.router)

__all__ = ["ROUTERS", "completions", "edits", "images", "system"]
