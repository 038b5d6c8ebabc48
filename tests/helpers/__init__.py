"""What several test folders share: image makers, the hub stand-in, the loopback guard, the import blocker,
label sources and the repository's paths. Test-only code lives here, never in ``runtime/`` or ``export/``."""
