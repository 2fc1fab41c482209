"""%px and friends, driven through IPython's InteractiveShell."""

import pytest

IPython = pytest.importorskip("IPython")


@pytest.fixture
def shell(rc):
    from IPython.testing.globalipapp import get_ipython, start_ipython

    from ferrocluster import _magics

    shell = start_ipython() or get_ipython()  # one shell per process
    shell.run_line_magic("load_ext", "ferrocluster")
    rc.activate()
    yield shell
    _magics._disable_autopx(shell)
    _magics._state.update(block=True, targets=None)


def test_px_runs_on_every_engine_and_shows_output_per_engine(rc, shell, capsys):
    shell.run_cell("%px x = 6 * 7")
    assert rc[:]["x"] == [42, 42]
    capsys.readouterr()
    shell.run_cell("%%px\nprint('x is', x)\n")
    out = capsys.readouterr().out
    for e in rc.ids:
        assert "[stdout:%d] x is 42" % e in out, out
    shell.run_cell("%%px --noblock\nprint('later')\n")
    shell.run_line_magic("pxresult", "")
    assert "later" in capsys.readouterr().out
    shell.run_line_magic("autopx", "")
    shell.run_cell("y = x + 1")
    shell.run_line_magic("autopx", "")
    assert rc[:]["y"] == [43, 43]


def test_px_targets_block_local_and_pxconfig(rc, shell, capsys):
    e0, e1 = rc.ids[:2]
    shell.run_cell("%%%%px --targets %d\nwho = 'first'\nprint('only here')\n" % e0)
    out = capsys.readouterr().out
    assert "[stdout:%d] only here" % e0 in out and "[stdout:%d]" % e1 not in out, out
    assert rc[e0]["who"] == "first"
    shell.run_cell("%%px --targets=1: --noblock\nwho = 'second'\n")
    shell.run_line_magic("pxresult", "")
    assert rc[e1]["who"] == "second" and rc[e0]["who"] == "first"
    shell.run_cell("%%px --local\nboth = 3\n")
    assert shell.user_ns["both"] == 3 and rc[:]["both"] == [3, 3]
    # %pxconfig: the defaults of the magics.
    shell.run_line_magic("pxconfig", "--targets %d --noblock" % e1)
    capsys.readouterr()
    shell.run_cell("%px print('configured')")
    assert "configured" not in capsys.readouterr().out, "noblock: nothing shown yet"
    shell.run_line_magic("pxresult", "")
    out = capsys.readouterr().out
    assert "[stdout:%d] configured" % e1 in out and "[stdout:%d]" % e0 not in out, out
    shell.run_line_magic("pxconfig", "--block --targets all")
    shell.run_cell("%px print('everywhere')")
    out = capsys.readouterr().out
    assert all("[stdout:%d] everywhere" % e in out for e in rc.ids), out


def test_px_shows_remote_tracebacks_per_engine(rc, shell, capsys):
    result = shell.run_cell("%px 1 / 0")
    assert not result.success
    from ferrocluster import CompositeError
    assert isinstance(result.error_in_exec, CompositeError)
    out = capsys.readouterr()
    text = out.out + out.err
    for e in rc.ids:
        assert "[engine %d] Traceback" % e in text, text
    assert "ZeroDivisionError" in text


def test_activate_with_a_suffix(rc, shell, capsys):
    rc.activate(targets=[rc.ids[0]], suffix="0")
    shell.run_cell("%px0 print('suffixed')")
    out = capsys.readouterr().out
    assert "[stdout:%d] suffixed" % rc.ids[0] in out, out
