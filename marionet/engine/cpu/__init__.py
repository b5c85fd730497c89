"""marionet's built-in CPU engine: pose -> character rig -> retarget -> render (see `engine.py`)."""

from marionet.engine.cpu.engine import CpuEngine

__all__ = ["CpuEngine"]
