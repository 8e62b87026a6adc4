import av
import numpy as np
import pytest

from hravatar.errors import HRAvatarError
from hravatar.io.image import to_uint8
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


def _write_raw(path, frames, fmt, codec="libx264", tags=None, fps=10):
    """Mux frames with PyAV directly (a container/tag combination write_video does not make)."""
    with av.open(str(path), "w", format=fmt) as out:
        s = out.add_stream(codec, rate=fps)
        s.height, s.width = frames[0].shape[:2] if frames else (32, 32)
        s.pix_fmt = "yuv420p"
        s.metadata.update(tags or {})
        out.start_encoding()
        for f in frames:
            for pkt in s.encode(av.VideoFrame.from_ndarray(to_uint8(f), format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    return path


def test_rotate_tag_matches_display_matrix(tmp_path):
    """Phones' legacy ``rotate=90`` tag means 90 degrees clockwise = display-matrix rotation 270 (ccw)."""
    frames = _clip(n=3)
    frames[0][:6, :6] = 1.0  # mark the stored top-left corner
    tagged = _write_raw(tmp_path / "tag.mkv", frames, "matroska", tags={"rotate": "90"})
    info = probe_video(tagged)
    assert (info.rotation, info.width, info.height) == (270, 48, 64)
    got, _ = read_video(tagged, show_progress=False)
    # turned clockwise: the stored top-left corner is now the top-right one
    assert got[0][:6, -6:].mean() > 240 and got[0][:6, :6].mean() < 200
    matrix, _ = read_video(write_video(tmp_path / "m.mp4", frames, fps=10, rotation=270), show_progress=False)
    assert _psnr(got[0] / 255.0, matrix[0] / 255.0) > 35


def test_zero_frame_videos(tmp_path):
    for name, fmt, codec in (("zero.mp4", "mp4", "libx264"), ("zero.avi", "avi", "mpeg4")):
        path = _write_raw(tmp_path / name, [], fmt, codec)
        assert path.stat().st_size > 0
        for call in (probe_video, read_video, lambda p: list(iter_video(p, show_progress=False))):
            with pytest.raises(HRAvatarError, match=name) as e:
                call(path)
            assert "\n" not in str(e.value)


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
    got = list(iter_video(cut, show_progress=False))  # the index is at the front (faststart)
    assert 0 < len(got) < 40
    assert _psnr(got[-1] / 255.0, frames[len(got) - 1]) > 30  # the frames that decode are the right ones
    assert any("truncated" in r.message and "cut.mp4" in r.message for r in caplog.records)
    # a recording cut before its index was written (index at the end) is unreadable: one line
    tail = tmp_path / "noindex.mp4"
    _write_raw(tail, frames, "mp4")
    tail.write_bytes(tail.read_bytes()[: int(tail.stat().st_size * 0.6)])
    with pytest.raises(HRAvatarError, match="noindex.mp4.*truncated") as e:
        list(iter_video(tail, show_progress=False))
    assert "\n" not in str(e.value)
