"""Media and file I/O: video, images, HDR/EXR environment maps, Gaussian PLY, atomic writes.

The rest of the project reads and writes files only through this package.
"""
