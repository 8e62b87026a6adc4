"""The built-in synthetic subject: animation curves, procedural appearance and lighting, and
the ground-truth renderer / writer behind ``hravatar synth``."""
