"""Fetch the files-only assets (LPIPS, MobileNetV2 ImageNet, face landmarker) into the cache."""

from hravatar.assets import fetch_assets

if __name__ == "__main__":
    for name, path in fetch_assets().items():
        print(f"{name}: {path}")
