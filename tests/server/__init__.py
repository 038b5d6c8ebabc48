"""The HTTP server: routes, hosted (NVIDIA) routes, settings, hostile clients, Ray Serve, the page in a browser."""
