"""marionet: a self-hosted motion-control video API (Kling-compatible) with a built-in CPU engine."""

__version__ = "0.1.0"
