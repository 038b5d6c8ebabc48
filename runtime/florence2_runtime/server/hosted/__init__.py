"""NVIDIA's hosted Florence-2 API, served here as a drop-in: one package for its route and its asset store.

- ``routes.py``: the router (``POST /v1/vlm/microsoft/florence-2`` and the NVCF assets API) and its models;
- ``protocol.py``: the request's content (task, text, image source) and the answer's JSON;
- ``archive.py``: the zip answer with its overlay, and when the JSON comes alone;
- ``assets.py``: the in-memory NVCF asset store.

Only ``routes.py`` needs FastAPI.
"""
