from hravatar.progress import progress


def test_plain_lines_when_not_a_tty(capsys):
    # pytest captures stderr, so it is not a TTY: the bar degrades to plain lines
    out = list(progress(range(5), desc="work", interval=0.0))
    assert out == [0, 1, 2, 3, 4]
    err = capsys.readouterr().err
    assert "work: 5/5" in err and "\r" not in err
    with progress(total=3, desc="manual", interval=0.0) as bar:
        bar.update(2)
        bar.set_postfix(loss=0.5)
    assert "manual: 2/3" in capsys.readouterr().err
