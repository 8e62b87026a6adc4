"""Subject folders: the format preprocessing writes (:func:`write_subject`) and training reads
(:func:`load_subject`); HRAvatar's own layout is read too. See :mod:`hravatar.data.format`."""

from hravatar.data.dataset import FrameSample, SubjectDataset, box_to_affine, load_subject, mask_crop_box
from hravatar.data.downscale import downscale_frame, downscale_image
from hravatar.data.format import (
    CROP_SIZE,
    SubjectParams,
    crop_box_from_points,
    default_test_count,
    frame_name,
    write_subject,
)

__all__ = [
    "CROP_SIZE",
    "FrameSample",
    "SubjectDataset",
    "SubjectParams",
    "box_to_affine",
    "crop_box_from_points",
    "default_test_count",
    "downscale_frame",
    "downscale_image",
    "frame_name",
    "load_subject",
    "mask_crop_box",
    "write_subject",
]
