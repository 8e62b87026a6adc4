"""The HTML report: a self-contained page (images embedded) plus JSON, and its figures."""

from hravatar.report.html import Report, data_uri, encode_image, jsonable, to_uint8

__all__ = ["Report", "data_uri", "encode_image", "jsonable", "to_uint8"]
