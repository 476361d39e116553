"""Device models behind the hwloop backend contract: ``pcm`` (phase-change-memory crossbar)."""
