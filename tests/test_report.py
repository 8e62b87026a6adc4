"""The HTML report builder and its figures, on dummy inputs."""

import base64
import json
import re

import numpy as np

from hravatar.report import Report
from hravatar.report.plots import bar_plot, curves_plot, error_map, normal_to_rgb, tonemap, training_curves


def test_report_is_self_contained(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.uniform(size=(16, 24, 3)).astype(np.float32)
    rep = Report("Test report", subtitle="made by a test")
    rep.section("Metrics", note="numbers <here> are escaped")
    rep.table([{"metric": "PSNR", "value": 31.234567}, {"metric": "SSIM", "value": 0.95}])
    rep.section("Images")
    rep.image_rows(
        [("frame 0", [("GT", img), ("ours", img[..., :1]), ("jpeg", (img * 255).astype(np.uint8))])],
        fmt="png",
    )
    hist = [{"step": i, "loss": 1.0 / (i + 1), "psnr": 10 + i * 0.1} for i in range(50)]
    rep.figure(training_curves(hist), "curves")
    rep.figure(curves_plot(np.arange(10), {"a": np.arange(10) ** 0.5}), "tracks")
    rep.figure(bar_plot({"synth": 3.0, "train": 100.0}), "timings")
    out = rep.write(
        tmp_path / "r.html",
        json_path=tmp_path / "r.json",
        data={"psnr": np.float32(31.2), "nan": float("nan")},
    )
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert "numbers &lt;here&gt; are escaped" in text
    assert "31.2346" in text
    srcs = re.findall(r'src="([^"]+)"', text)
    assert len(srcs) == 6 and all(s.startswith("data:image/png;base64,") for s in srcs)
    for s in srcs:  # every embedded image decodes to a PNG
        raw = base64.b64decode(s.split(",", 1)[1])
        assert raw[:4] == b"\x89PNG"
    assert "file://" not in text and "http" not in text.replace("http-equiv", "")
    data = json.loads((tmp_path / "r.json").read_text())
    assert abs(data["psnr"] - 31.2) < 1e-4 and data["nan"] is None


def test_image_helpers():
    n = np.zeros((4, 4, 3), np.float32)
    n[..., 2] = 1
    rgb = normal_to_rgb(n, mask=np.ones((4, 4)))
    assert np.allclose(rgb[0, 0], [0.5, 0.5, 1.0])
    t = tonemap(np.full((2, 2, 3), 1e3, np.float32))
    assert t.max() <= 1.0 and t.min() > 0.9
    e = error_map(np.zeros((3, 3, 3)), np.ones((3, 3, 3)))
    assert e.shape == (3, 3, 3)
