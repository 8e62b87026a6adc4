import numpy as np
import pytest

from hravatar.errors import HRAvatarError
from hravatar.io.video import iter_video, probe_video, read_video, write_video


def _clip(n=12, h=48, w=64):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return [
        np.stack([0.5 + 0.4 * np.sin(xx / 15 + t / 4), 0.5 + 0.4 * np.cos(yy / 12 - t / 5),
                  np.full((h, w), 0.2 + t / (2 * n))], -1).astype(np.float32)
        for t in range(n)
    ]


def _psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a - b) ** 2))


def test_round_trip_psnr(tmp_path):
    frames = _clip()
    path = write_video(tmp_path / "a.mp4", frames, fps=25)
    got, info = read_video(path, show_progress=False)
    assert (info.width, info.height, info.num_frames) == (64, 48, 12) and info.fps == 25
    assert _psnr(np.stack(got) / 255.0, np.stack(frames)) > 35
    assert not list(tmp_path.glob(".*tmp*")), "temporary file left behind"


def test_stride_max_frames_resize_and_odd_size(tmp_path):
    frames = _clip(n=10, h=31, w=45)
    path = write_video(tmp_path / "odd.mp4", frames, fps=30)
    info = probe_video(path)
    assert (info.width, info.height) == (46, 32)  # padded to even sizes
    got = list(iter_video(path, stride=3, max_frames=3, size=(23, 16), show_progress=False))
    assert len(got) == 3 and got[0].shape == (16, 23, 3) and got[0].dtype == np.uint8
    short = list(iter_video(path, size=16, show_progress=False))
    assert short[0].shape[0] == 16


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_metadata(tmp_path, rotation):
    frames = _clip(n=4)
    path = write_video(tmp_path / "r.mp4", frames, fps=10, rotation=rotation)
    info = probe_video(path)
    assert info.rotation == rotation
    got, _ = read_video(path, show_progress=False)
    expect = np.rot90(frames[2], rotation // 90)
    assert got[2].shape == expect.shape
    assert _psnr(got[2] / 255.0, expect) > 30


def test_unreadable_and_missing(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    with pytest.raises(HRAvatarError, match="bad.mp4"):
        probe_video(bad)
    with pytest.raises(HRAvatarError, match="not found"):
        list(iter_video(tmp_path / "none.mp4"))
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(HRAvatarError, match="empty.mp4"):
        read_video(empty)


def test_zero_frames_write_refused(tmp_path):
    with pytest.raises(HRAvatarError, match="no frames"):
        write_video(tmp_path / "z.mp4", [], fps=10)
    assert not (tmp_path / "z.mp4").exists()


def test_truncated_yields_decodable_frames(tmp_path, caplog):
    frames = _clip(n=40, h=64, w=64)
    path = write_video(tmp_path / "t.mp4", frames, fps=25, crf=10)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    try:
        got = list(iter_video(cut, show_progress=False))
    except HRAvatarError as e:  # a cut that removes the index makes the file unreadable: still one line
        assert "cut.mp4" in str(e) and "\n" not in str(e)
        return
    assert 0 < len(got) < 40
    assert any("truncated" in r.message for r in caplog.records)
