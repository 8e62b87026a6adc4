"""Head models: the :class:`HeadModel` interface, the open default (anny), FLAME, mouth interior."""

from hravatar.head.model import JOINT_NAMES, HeadModel, HeadOutput

__all__ = ["HeadModel", "HeadOutput", "JOINT_NAMES"]
