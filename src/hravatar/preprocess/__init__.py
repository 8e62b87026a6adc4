"""From a video to training data: face detection, crop, matting, landmarks, blendshapes, head tracking.

The one-command entry point is :func:`hravatar.preprocess.pipeline.preprocess_video` (CLI:
``hravatar preprocess``). Submodules import MediaPipe lazily.
"""
